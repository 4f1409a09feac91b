"""Where the Paperspace API key comes from, looked up locally (never over the network).

In order: the key given to the provider, the PAPERSPACE_API_KEY environment variable, the
Paperspace CLI's files. The current CLI (`pspace`, Paperspace/cli) keeps `~/.paperspace/config.toml`
(`team = "<name>"`) and `~/.paperspace/credentials.toml` (`[keys]`, team name -> API key); the
older CLIs (paperspace-node, paperspace-python) kept `~/.paperspace/config.json` with an `apiKey`.

The key itself is never printed, logged, stored or put in an error: `ApiKey` hides it from repr
and str, and the messages here name only where a key was (or was not) found.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "PAPERSPACE_API_KEY"
KEYS_URL = "https://console.paperspace.com/settings/apikeys"
HOW_TO_SET = (
    f"set {ENV_VAR} to an API key made at {KEYS_URL}, or log in with the Paperspace CLI "
    "(`pspace login`)"
)


@dataclass(frozen=True)
class ApiKey:
    value: str = field(repr=False)
    source: str  # where it was found, for messages: never the key

    def __str__(self) -> str:
        return f"Paperspace API key from {self.source}"


@dataclass(frozen=True)
class KeyLookup:
    key: ApiKey | None
    problem: str = ""  # why a file that looked like it should hold a key did not


def find_api_key(explicit: str | None = None, *, home: Path | None = None) -> KeyLookup:
    """The first key found, or why none was. Reads the environment and HOME when called."""
    if explicit:
        return KeyLookup(ApiKey(explicit.strip(), "the provider's settings"))
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return KeyLookup(ApiKey(from_env, ENV_VAR))
    folder = (home or Path.home()) / ".paperspace"
    problems: list[str] = []
    for lookup in (_pspace_key, _legacy_key):
        key, problem = lookup(folder)
        if key is not None:
            return KeyLookup(key)
        if problem:
            problems.append(problem)
    return KeyLookup(None, "; ".join(problems))


def _pspace_key(folder: Path) -> tuple[ApiKey | None, str]:
    credentials = folder / "credentials.toml"
    if not credentials.is_file():
        return None, ""
    try:
        keys = tomllib.loads(credentials.read_text()).get("keys", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return None, f"~/.paperspace/credentials.toml could not be read ({exc.__class__.__name__})"
    keys = {team: key for team, key in keys.items() if isinstance(key, str) and key.strip()}
    if not keys:
        return None, "~/.paperspace/credentials.toml holds no API key"
    team = _current_team(folder / "config.toml")
    if team and team in keys:
        return ApiKey(keys[team].strip(), f"~/.paperspace/credentials.toml (team {team})"), ""
    if len(keys) == 1:
        ((only_team, key),) = keys.items()
        return ApiKey(key.strip(), f"~/.paperspace/credentials.toml (team {only_team})"), ""
    return None, (
        f"~/.paperspace/credentials.toml has keys for {len(keys)} teams and no current team: "
        'choose one with `pspace config set team "<team>"`'
    )


def _current_team(config: Path) -> str | None:
    try:
        team = tomllib.loads(config.read_text()).get("team")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return team if isinstance(team, str) and team else None


def _legacy_key(folder: Path) -> tuple[ApiKey | None, str]:
    config = folder / "config.json"
    if not config.is_file():
        return None, ""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        return None, f"~/.paperspace/config.json could not be read ({exc.__class__.__name__})"
    key = data.get("apiKey") if isinstance(data, dict) else None
    if isinstance(key, str) and key.strip():
        return ApiKey(key.strip(), "~/.paperspace/config.json"), ""
    return None, "~/.paperspace/config.json holds no apiKey"
