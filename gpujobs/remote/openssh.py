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
from gpujobs.remote.ssh_config import ResolvedHost, default_config_path, resolve


def config_word(value: str) -> str:
    """A value in an ssh_config file: double-quoted when it holds spaces."""
    if '"' in value or "\n" in value or "\r" in value:
        raise TransportError(f"{value!r}: a value with quotes or newlines cannot go to ssh")
    value = value.replace("%", "%%")  # ssh reads %d, %h... as tokens in paths and names
    return f'"{value}"' if any(ch.isspace() for ch in value) or not value else value


def route_of(target: SshTarget) -> ResolvedHost:
    """Where `target` really goes after the user's ssh config (alias, ProxyJump, ProxyCommand),
    the same route the driver's own connection takes."""
    try:
        return resolve(
            target.host,
            port=target.port,
            user=target.user,
            identity_file=target.identity_file,
            config_path=default_config_path(),
        )
    except ValueError as exc:
        raise TransportError(str(exc)) from None


def host_entry(alias: str, target: SshTarget, known_hosts: Path) -> str:
    """One `Host` block: the node's route (a lab host's alias, bastions included) and strict
    host-key checking against gpujobs' pins only."""
    route = route_of(target)
    lines = [
        f"Host {config_word(alias)}",
        f"  HostName {config_word(route.hostname)}",
        f"  Port {route.port}",
        # The pins are recorded under the resolved name: ssh must look that name up.
        f"  HostKeyAlias {config_word(route.known_hosts_name)}",
    ]
    if route.user:
        lines.append(f"  User {config_word(route.user)}")
    if route.proxy_command:
        lines.append(f"  ProxyCommand {route.proxy_command}")
    elif route.proxy_jump:
        # Each hop is resolved by ssh itself, from the user's config (the bastion's aliases).
        lines.append(f"  ProxyJump {','.join(route.proxy_jump)}")
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
    lines += [f"  IdentityFile {config_word(path)}" for path in route.identity_files]
    if route.identities_only:
        lines.append("  IdentitiesOnly yes")
    return "\n".join(lines) + "\n"


def every_host_pinned(known_hosts: Path) -> str:
    """The tail of a generated file read with `ssh -F`: every host, the bastions of a ProxyJump
    included (the jump's own ssh reads the same -F file), checked against gpujobs' pins only;
    then the user's own config, whose aliases name those bastions. The first value ssh reads
    wins, so the user's settings cannot loosen these."""
    lines = [
        "Host *",
        f"  UserKnownHostsFile {config_word(str(known_hosts))}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  CheckHostIP no",
    ]
    path = default_config_path()
    if path.is_file():
        lines.append(f"Include {config_word(str(path))}")
    return "\n".join(lines) + "\n"


def host_key_pinned(known_hosts: Path, target: SshTarget) -> bool:
    """Whether `known_hosts` holds a key for the target's resolved name (as gpujobs pins it)."""
    import paramiko

    if not known_hosts.is_file():
        return False
    keys = paramiko.HostKeys()
    try:
        keys.load(str(known_hosts))
    except (OSError, paramiko.SSHException):
        return False
    return keys.lookup(route_of(target).known_hosts_name) is not None


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
