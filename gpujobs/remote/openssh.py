"""Host entries for the system `ssh` (and VS Code's Remote-SSH), reaching a node with the job's
own key and only its pinned host key: what `gpujobs ssh` and `gpujobs ssh-config` write.

No secret goes on a command line or into the file: it names the key file (0600 in the gpujobs
home), it does not hold it.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpujobs.errors import TransportError
from gpujobs.remote.ssh import SshTarget


def config_word(value: str) -> str:
    """A value in an ssh_config file: double-quoted when it holds spaces."""
    if '"' in value or "\n" in value or "\r" in value:
        raise TransportError(f"{value!r}: a value with quotes or newlines cannot go to ssh")
    return f'"{value}"' if any(ch.isspace() for ch in value) or not value else value


def host_entry(alias: str, target: SshTarget, known_hosts: Path) -> str:
    """One `Host` block: strict host-key checking against gpujobs' pins only."""
    lines = [
        f"Host {config_word(alias)}",
        f"  HostName {config_word(target.host)}",
        f"  Port {target.port}",
    ]
    if target.user:
        lines.append(f"  User {config_word(target.user)}")
    lines += [
        f"  UserKnownHostsFile {config_word(str(known_hosts))}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  CheckHostIP no",
        # Keepalives: a dead link ends the session in about a minute instead of hanging.
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
    ]
    if target.identity_file:
        lines += [f"  IdentityFile {config_word(target.identity_file)}", "  IdentitiesOnly yes"]
    return "\n".join(lines) + "\n"


def host_key_pinned(known_hosts: Path, target: SshTarget) -> bool:
    """Whether `known_hosts` holds a key for the target (plain names, as gpujobs writes them)."""
    import paramiko

    if not known_hosts.is_file():
        return False
    keys = paramiko.HostKeys()
    try:
        keys.load(str(known_hosts))
    except (OSError, paramiko.SSHException):
        return False
    return keys.lookup(target.known_hosts_name) is not None


def write_private(path: Path, text: str) -> Path:
    """Write `text` at `path` readable by the user alone (0700 folder, 0600 file), replacing
    it atomically so a running ssh never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)
    return path
