"""Where a job's files live inside its work directory on a node. Shared by providers and runtimes.

On a machine without containers the spec's `dataset.target` and `checkpoints.path` are folders
here; the workload is told the real paths (--data/--out, GPUJOBS_DATA_DIR/GPUJOBS_CKPT_DIR).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeLayout:
    workdir: str

    def _join(self, name: str) -> str:
        return posixpath.join(self.workdir, name)

    @property
    def code(self) -> str:
        return self._join("code")

    @property
    def data(self) -> str:
        return self._join("data")

    @property
    def checkpoints(self) -> str:
        return self._join("ckpt")

    @property
    def log(self) -> str:
        return self._join("job.log")

    @property
    def exit_code(self) -> str:
        return self._join("exit_code")

    @property
    def pid(self) -> str:
        """Written by the launch script first thing: the process group of the job."""
        return self._join("pid")

    @property
    def started_pid(self) -> str:
        """Written by the transport's detached start before it returns (see DETACH): the same
        pid, there even before the launch script has run its first line."""
        return self._join(".started/pid")

    @property
    def stop_reason(self) -> str:
        """Written by the node's own watchdog when it stopped the job (budget.max_hours)."""
        return self._join("stop_reason")

    @property
    def env_file(self) -> str:
        return self._join("job.env")

    @property
    def launch_script(self) -> str:
        return self._join("launch.sh")
