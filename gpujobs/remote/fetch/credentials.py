"""The credentials a job's sources need, found on the laptop, as environment variables for the
fetcher on the node. Only what a source's scheme needs goes; a public source works with none.

AWS: the standard variables, else the profile (AWS_PROFILE, ~/.aws) resolved by botocore when it
is installed (so SSO and assumed roles give temporary keys); GCP: an access token from
Application Default Credentials or GOOGLE_APPLICATION_CREDENTIALS (google-auth); Kaggle:
KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json; Hugging Face: HF_TOKEN.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

_PASS_THROUGH = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "HF_ENDPOINT",
    "KAGGLE_API_ENDPOINT",
)


def credentials_for(sources: Sequence[str]) -> dict[str, str]:
    schemes = {source.split("://", 1)[0] for source in sources}
    found: dict[str, str] = {
        name: os.environ[name] for name in _PASS_THROUGH if os.environ.get(name)
    }
    if "s3" in schemes:
        found.update(_aws())
    if "gs" in schemes:
        found.update(_gcp())
    if "kaggle" in schemes:
        found.update(_kaggle())
    if "hf" in schemes and os.environ.get("HF_TOKEN"):
        found["HF_TOKEN"] = os.environ["HF_TOKEN"]
    return found


def _aws() -> dict[str, str]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    if os.environ.get(names[0]) and os.environ.get(names[1]):
        return {name: os.environ[name] for name in names if os.environ.get(name)}
    try:
        import botocore.session  # the aws extra; a public bucket needs none
    except ImportError:
        return {}
    session = botocore.session.Session()
    try:
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
    except Exception:
        return {}
    if frozen is None:
        return {}
    out = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        out["AWS_SESSION_TOKEN"] = frozen.token
    region = session.get_config_variable("region")
    if region and not os.environ.get("AWS_REGION"):
        out["AWS_REGION"] = region
    return out


def _gcp() -> dict[str, str]:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return {}  # an emulator takes no token
    try:
        import google.auth  # the gcp extra
        import google.auth.transport.requests
    except ImportError:
        return {}
    try:
        creds, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
        )
        creds.refresh(google.auth.transport.requests.Request())
    except Exception:
        return {}
    return {"GPUJOBS_GCS_TOKEN": creds.token} if creds.token else {}


def _kaggle() -> dict[str, str]:
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return {"KAGGLE_USERNAME": user, "KAGGLE_KEY": key}
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    try:
        data = json.loads((folder / "kaggle.json").read_text())
    except (OSError, ValueError):
        return {}
    if data.get("username") and data.get("key"):
        return {"KAGGLE_USERNAME": str(data["username"]), "KAGGLE_KEY": str(data["key"])}
    return {}
