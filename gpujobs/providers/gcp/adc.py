"""Where GCP credentials and the project come from, found locally: no network, no metadata
server, no Google library (so `gpujobs check` is instant and works offline).

Application default credentials (ADC) are the file GOOGLE_APPLICATION_CREDENTIALS names, else
the one `gcloud auth application-default login` writes. The project is, in order: the one given
to the provider, GOOGLE_CLOUD_PROJECT or CLOUDSDK_CORE_PROJECT, the ADC file's quota project
(or a service account key's project), then gcloud's active configuration.
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOGIN_COMMAND = "gcloud auth application-default login"
_ADC_FILE = "application_default_credentials.json"
_PROJECT_ENV = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


@dataclass(frozen=True)
class AdcLookup:
    path: Path | None  # the credentials file, when one was found
    problem: str = ""  # why none was found, in a form the user can act on

    @property
    def found(self) -> bool:
        return self.path is not None


def gcloud_config_dir(env: Mapping[str, str]) -> Path:
    """gcloud's configuration folder (CLOUDSDK_CONFIG moves it; %APPDATA% on Windows)."""
    if env.get("CLOUDSDK_CONFIG"):
        return Path(env["CLOUDSDK_CONFIG"])
    if os.name == "nt" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "gcloud"
    return Path(env.get("HOME") or Path.home()) / ".config" / "gcloud"


def find_adc(env: Mapping[str, str] | None = None) -> AdcLookup:
    env = os.environ if env is None else env
    named = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        path = Path(named).expanduser()
        if path.is_file():
            return AdcLookup(path)
        return AdcLookup(
            None,
            f"GOOGLE_APPLICATION_CREDENTIALS names {path}, which does not exist: fix or unset "
            f"it, or run `{LOGIN_COMMAND}`",
        )
    path = gcloud_config_dir(env) / _ADC_FILE
    if path.is_file():
        return AdcLookup(path)
    return AdcLookup(
        None,
        f"no application default credentials ({path} is missing): run `{LOGIN_COMMAND}`, "
        "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file",
    )


def find_project(adc: AdcLookup, env: Mapping[str, str] | None = None) -> str | None:
    """The project to work in, from the environment, the ADC file or gcloud's configuration."""
    env = os.environ if env is None else env
    for name in _PROJECT_ENV:
        if env.get(name):
            return env[name]
    if adc.path is not None:
        try:
            data = json.loads(adc.path.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            for key in ("quota_project_id", "project_id"):
                if isinstance(data.get(key), str) and data[key]:
                    return data[key]
    return _gcloud_project(gcloud_config_dir(env))


def _gcloud_project(config_dir: Path) -> str | None:
    try:
        active = (config_dir / "active_config").read_text().strip() or "default"
    except OSError:
        active = "default"
    parser = configparser.ConfigParser()
    try:
        parser.read(config_dir / "configurations" / f"config_{active}")
    except configparser.Error:
        return None
    return parser.get("core", "project", fallback=None) or None
