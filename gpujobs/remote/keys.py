"""Per-job SSH key pairs: ed25519, the private half written 0600 in a 0700 folder of the gpujobs
home, the public half handed to the provider at provisioning. Deleted once the job's nodes are.

A key per job means a leaked key opens one job's machines for that job's lifetime, and deleting
it is the revocation. The key never leaves this machine except as its public half.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class JobKey:
    private_path: Path
    public_line: str  # "ssh-ed25519 AAAA... gpujobs-<job id>", as authorized_keys takes it


def create_job_key(folder: Path, job_id: str) -> JobKey:
    """Make (or reuse, when the job already has one) the job's key pair under `folder`."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    private_path = folder / "id_ed25519"
    public_path = folder / "id_ed25519.pub"
    if private_path.exists() and public_path.exists():
        return JobKey(private_path, public_path.read_text().strip())
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_line = f"{public.decode()} gpujobs-{job_id}"
    # O_EXCL with the mode: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    public_path.write_text(public_line + "\n")
    return JobKey(private_path, public_line)


def delete_job_key(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
