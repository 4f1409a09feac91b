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
    def src(self) -> str:
        """The user's code folder (`workdir:`), where `command` and `setup` run."""
        return self._join("src")

    @property
    def files(self) -> str:
        """Where `files` with an absolute node path land on a node without containers (the
        workload is told the real place): `/files/w.pth` -> `<job>/files/files/w.pth`."""
        return self._join("files")

    @property
    def cache(self) -> str:
        """A folder beside the jobs' folders that outlives them (`<root>/work/<job>` ->
        `<root>/cache`): `files` by content hash, and which setups already ran."""
        return posixpath.join(posixpath.dirname(posixpath.dirname(self.workdir)), "cache")

    def run_dir(self, has_code: bool) -> str:
        """The working folder of the job's command: its code folder when it sent one."""
        return self.src if has_code else self.workdir

    def file_place(self, node_path: str, has_code: bool) -> str:
        """Where a `files` entry is on a node without containers."""
        if node_path.startswith("/"):
            return self.files + node_path
        return posixpath.join(self.run_dir(has_code), node_path)

    @property
    def setup_dir(self) -> str:
        """The setup's own folder: its detached start keeps its marker there, apart from the
        job's (a transport starts one script per folder, see remote.transport.DETACH)."""
        return self._join(".setup")

    @property
    def setup_script(self) -> str:
        return posixpath.join(self.setup_dir, "setup.sh")

    @property
    def setup_exit_code(self) -> str:
        return posixpath.join(self.setup_dir, "exit_code")

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
    def notify_targets(self) -> str:
        """Where the node sends its own notifications (0600): `webhook URL` / `ntfy URL`."""
        return self._join("notify_targets")

    @property
    def notify_script(self) -> str:
        return self._join("notify.sh")

    @property
    def env_file(self) -> str:
        return self._join("job.env")

    @property
    def launch_script(self) -> str:
        return self._join("launch.sh")
