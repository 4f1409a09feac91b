"""Credentials for a private `image:`: the spec's `registry_auth` (a user, and the name of a
local environment variable holding the token), else the user's own `docker login` for that
registry (~/.docker/config.json's `auths`). They reach the node as a 0600 file read by
`docker login --password-stdin` and removed at once: never a command line, never the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpujobs.errors import BadInputError, ProvisioningError
from gpujobs.remote.transport import Transport
from gpujobs.spec import JobSpec

_LOGIN = (
    'docker login --username "$1" --password-stdin "$2" < "$3" >/dev/null; rc=$?; '
    'rm -f "$3"; exit "$rc"'
)


@dataclass(frozen=True)
class Login:
    server: str
    username: str
    secret: str

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"Login({self.server!r}, {self.username!r}, secret=***)"


def registry_of(image: str) -> str | None:
    """The registry host an image reference names; None for Docker Hub's short names."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def login_for(spec: JobSpec, docker_config: Path | None = None) -> Login | None:
    """The login the node needs for the spec's image, or None (a public image, Docker Hub)."""
    if spec.registry_auth is not None:
        auth = spec.registry_auth
        secret = os.environ.get(auth.password_env)
        if not secret:
            raise BadInputError(
                f"registry_auth.password_env: {auth.password_env} is not set here; export it "
                f"(the token for {auth.username}@{auth.server}) before launching"
            )
        return Login(auth.server, auth.username, secret)
    server = registry_of(spec.image) if spec.image else None
    if server is None:
        return None
    config = docker_config or Path(os.environ.get("DOCKER_CONFIG", "~/.docker")).expanduser()
    try:
        auths = json.loads((config / "config.json").read_text()).get("auths", {})
        encoded = auths.get(server, {}).get("auth", "")
        username, _, secret = base64.b64decode(encoded).decode().partition(":")
    except (OSError, ValueError, AttributeError, binascii.Error, UnicodeDecodeError):
        return None
    return Login(server, username, secret) if username and secret else None


def log_in(transport: Transport, login: Login) -> None:
    """`docker login` on the node, the secret through a 0600 file on stdin."""
    remote = f"/tmp/gpujobs-login-{os.getpid()}-{id(login)}"
    with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
        local = Path(folder) / "secret"
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(login.secret)
        transport.put(local, remote, mode=0o600)
    done = transport.run(
        ["sh", "-c", _LOGIN, "sh", login.username, login.server, remote], timeout=120,
        check=False,
    )  # fmt: skip
    if not done.ok:
        raise ProvisioningError(
            f"docker login to {login.server} as {login.username} failed on the node "
            f"({done.tail(1) or done.exit_code}); check the token and the registry"
        )
