"""Where gpujobs keeps its files: `GPUJOBS_HOME`, else the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "GPUJOBS_HOME"


def gpujobs_home() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    # Imported here: platformdirs is only needed when no override is set.
    from platformdirs import user_data_path

    return user_data_path("gpujobs", appauthor=False)


class HomeLayout:
    """The folders under one gpujobs home. Made on first use, private to the user."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def work(self) -> Path:
        """Node work directories of the local provider."""
        return self.root / "work"

    @property
    def keys(self) -> Path:
        """Per-job SSH key pairs, one 0700 folder each."""
        return self.root / "keys"

    @property
    def known_hosts(self) -> Path:
        """Host keys pinned on first contact (OpenSSH format)."""
        return self.root / "known_hosts"

    @property
    def config_file(self) -> Path:
        """The user's defaults (today: `notify:`), when they wrote one."""
        return self.root / "config.yaml"

    def job_key_dir(self, job_id: str) -> Path:
        return self.keys / job_id

    def log_file(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    def node_log_file(self, job_id: str, rank: int) -> Path:
        """Node `rank`'s log of a multi-node job; rank 0's is the job's log."""
        return self.log_file(job_id) if rank == 0 else self.logs / f"{job_id}.node{rank}.log"

    def driver_log_file(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.driver.log"

    @property
    def content_hashes(self) -> Path:
        """sha256 of the files jobs send (`files:`), keyed by path, size and mtime: a 500 MB
        weights file is hashed once, not at every launch."""
        return self.root / "content_hashes.json"

    def lock_file(self, job_id: str) -> Path:
        return self.locks / f"{job_id}.lock"

    def ensure(self) -> HomeLayout:
        for folder in (self.root, self.logs, self.locks, self.work, self.keys):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self
