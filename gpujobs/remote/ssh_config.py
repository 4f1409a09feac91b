"""What `ssh NAME` would connect to: a host name looked up in the user's ~/.ssh/config (paramiko's
SSHConfig: Host patterns, HostName, User, Port, IdentityFile, IdentitiesOnly, ProxyJump,
ProxyCommand), so `ssh: {hosts: [labgpu]}` reaches the machine that `ssh labgpu` reaches.

Values written in the spec win over the config, as command-line values win for ssh; a port of 22
counts as "not written" (an alias's Port applies)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

# A name that no Host pattern but `*` can match, to tell an entry of the user's own from defaults.
_NO_SUCH_HOST = "gpujobs-no-such-host.invalid"
_JUMP = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$")


def default_config_path() -> Path:
    """GPUJOBS_SSH_CONFIG (tests, unusual setups), else ~/.ssh/config."""
    override = os.environ.get("GPUJOBS_SSH_CONFIG")
    return Path(override) if override else Path.home() / ".ssh" / "config"


@dataclass(frozen=True)
class ResolvedHost:
    alias: str  # the name as written (spec or ProxyJump)
    hostname: str  # where TCP goes (HostName, or the alias itself)
    port: int
    user: str  # "" : the local user
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: tuple[str, ...]  # hops, nearest first, each [user@]host[:port] or an alias
    proxy_command: str | None
    config_entry: bool  # a Host block of the user's (not only `Host *`) matched the alias
    config_path: Path | None  # the file read, None when there is none

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        via = f" via {','.join(self.proxy_jump)}" if self.proxy_jump else ""
        return f"{user}{self.alias}:{self.port}{via}"


def load_config(path: Path | None) -> paramiko.SSHConfig | None:
    if path is None or not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, UnicodeDecodeError, paramiko.ConfigParseError) as exc:
        raise ValueError(f"cannot read ssh config {path}: {exc}") from None


def resolve(
    alias: str,
    *,
    port: int = 22,
    user: str = "",
    identity_file: str | None = None,
    config_path: Path | None = None,
) -> ResolvedHost:
    """The host `ssh [user@]alias [-p port] [-i identity_file]` would reach."""
    config = load_config(config_path)
    found: dict[str, object] = {}
    entry = False
    if config is not None:
        found = dict(config.lookup(alias))
        baseline = dict(config.lookup(_NO_SUCH_HOST))
        entry = _without_hostname(found) != _without_hostname(baseline) or found.get(
            "hostname"
        ) not in (alias, None)
    config_port = int(str(found.get("port", 22)))
    identities = (
        (identity_file,)
        if identity_file
        else tuple(str(item) for item in _as_list(found.get("identityfile")))
    )
    jump = str(found.get("proxyjump") or "")
    command = str(found.get("proxycommand") or "")
    return ResolvedHost(
        alias=alias,
        hostname=str(found.get("hostname") or alias),
        port=port if port != 22 else config_port,
        user=user or str(found.get("user") or ""),
        identity_files=identities,
        identities_only=bool(identity_file)
        or str(found.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=tuple(hop.strip() for hop in jump.split(",") if hop.strip())
        if jump.lower() != "none"
        else (),
        proxy_command=command if command and command.lower() != "none" else None,
        config_entry=entry,
        config_path=config_path if config is not None else None,
    )


def resolve_hop(hop: str, config_path: Path | None) -> ResolvedHost:
    """One ProxyJump hop, `[user@]host[:port]`, itself looked up in the config."""
    match = _JUMP.match(hop)
    if match is None:
        raise ValueError(f"ProxyJump hop {hop!r} is not [user@]host[:port]")
    return resolve(
        match.group("host").strip("[]"),
        port=int(match.group("port") or 22),
        user=match.group("user") or "",
        config_path=config_path,
    )


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _without_hostname(values: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in values.items() if key != "hostname"}


def config_value(value: str) -> str:
    """A value for a generated ssh_config line: `%` doubled (ssh reads `%d`, `%h`... as tokens
    in paths such as IdentityFile and UserKnownHostsFile), double-quoted when it holds spaces."""
    if '"' in value or "\n" in value:
        raise ValueError(f"{value!r}: a value with quotes cannot be given to ssh")
    value = value.replace("%", "%%")
    return f'"{value}"' if any(ch.isspace() for ch in value) else value
