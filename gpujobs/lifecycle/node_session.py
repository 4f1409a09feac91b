"""One job's workload on one node, seen through a Transport: start it, follow its log, read its
exit code, stop it gracefully, bring its checkpoints home.

Used by the driver during a launch and by `gpujobs down` for a job whose driver is gone.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path

from gpujobs.clock import Clock
from gpujobs.errors import TransportError
from gpujobs.lifecycle.batch_job import BatchJob
from gpujobs.remote.logs import LogFollower
from gpujobs.remote.sync import Progress, SyncReport, pull_dir, push_dir
from gpujobs.remote.transport import Transport
from gpujobs.runtime.bundle import bundle_digest, is_bundle_junk
from gpujobs.runtime.launcher import env_file, launch_script, node_notify_script
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.runtime.stop_job import STOP_JOB_SCRIPT
from gpujobs.workloads import jobs_package_dir

# Only once the workload has exited: `.upload-*/exit_code` is written by each uploader's script.
_UPLOADS_DONE = (
    '[ -e "$1/exit_code" ] || exit 0; n=0; while [ "$n" -lt 120 ]; do done=1; '
    'for d in "$1"/.upload-*/; do [ -d "$d" ] || continue; [ -e "$d/exit_code" ] || done=0; '
    'done; [ "$done" = 1 ] && exit 0; sleep 0.5; n=$((n + 1)); done'
)


# Renames a sent bundle into place ($1 -> $2; one already there is kept when whole, as when two
# jobs sent it at once, else replaced), links the job's code/jobs ($3) to it, and prunes
# the host's other bundles: each edit of the bundled workloads is a new digest, so a developer's
# host would gather one per edit. Kept: the newest KEEP_BUNDLES, and any sent in the last
# week (a job still running links to its own; a restart that finds it gone sends it again).
# Names in cache/code are digests and `<digest>.<job>.partial`: `ls -t` reads them safely.
KEEP_BUNDLES = 4
_SHARE_BUNDLE = (
    'mv -T "$1" "$2" 2>/dev/null || [ "$(cat "$1/DIGEST")" = "$(cat "$2/DIGEST" 2>/dev/null)" ] || '
    '{ rm -rf "$2" && mv -T "$1" "$2"; } || exit 1; rm -rf "$1"; '
    '[ -d "$2/jobs" ] || exit 1; ln -sfn "$2/jobs" "$3"; '
    'cd "${2%/*}" && ls -1t | tail -n +$(($4 + 1)) | while read -r old; do '
    'find "./$old" -maxdepth 0 -mtime +6 -exec rm -rf {} +; done; exit 0'
)


class NodeSession:
    def __init__(
        self,
        transport: Transport,
        layout: NodeLayout,
        local_log: Path,
        *,
        pid: int | None = None,
        batch: BatchJob | None = None,
        uploads: bool = True,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.follower = LogFollower(transport, layout.log, local_log)
        self.pid = pid  # the launch script's process group, or the batch scheduler's job id
        self.batch = batch  # set when a scheduler (Slurm) runs the launch script
        # Whether a checkpoint uploader may run beside the job (unknown: assume so); without
        # one, the pull need not ask the node to wait for it (a command saved).
        self.uploads = uploads

    # -- before the run ---------------------------------------------------------------------
    def make_folders(self) -> None:
        layout = self.layout
        self.transport.make_dirs([layout.code, layout.data, layout.checkpoints])

    def push_code(self) -> SyncReport | None:
        """The bundled workloads, as the node's `code/jobs` package: a link to the host's copy
        of this very bundle (`<cache>/code/<digest>`), which is sent only the first time a job
        of this gpujobs runs there. Returns what was sent, None when the host had it."""
        digest = bundle_digest()
        shared = posixpath.join(self.layout.cache, "code", digest)
        jobs = f"{self.layout.code}/jobs"
        if self.transport.read(f"{shared}/DIGEST", 0, 64).decode().strip() == digest:
            self.transport.link(f"{shared}/jobs", jobs)
            return None
        # Sent beside the shared copy and renamed into place whole, so a job never links to a
        # half-sent bundle; of two jobs sending it at once, the second keeps the first's copy.
        partial = f"{shared}.{posixpath.basename(self.layout.workdir)}.partial"
        report = push_dir(
            self.transport, jobs_package_dir(), f"{partial}/jobs", skip=is_bundle_junk
        )
        self.write_private(digest, f"{partial}/DIGEST")
        self.transport.run(
            ["sh", "-c", _SHARE_BUNDLE, "sh", partial, shared, jobs, str(KEEP_BUNDLES)]
        )
        return report

    def push_dataset(self, source: Path, progress: Progress | None = None) -> SyncReport:
        return push_dir(self.transport, source, self.layout.data, progress=progress)

    def start(
        self,
        argv: list[str],
        environment: dict[str, str],
        *,
        max_seconds: float | None,
        cwd: str | None = None,
        notify_targets: str = "",
    ) -> int:
        """Start the workload detached; `cwd`: its working folder (default: the job's);
        `notify_targets`: where the node itself reports a budget stop (notify.node_targets)."""
        self.write_private(env_file(environment), self.layout.env_file)
        if notify_targets:
            self.write_private(notify_targets, self.layout.notify_targets)
            self.write_private(node_notify_script(), self.layout.notify_script)
        script = launch_script(argv, self.layout, max_seconds=max_seconds, cwd=cwd)
        self.write_private(script, self.layout.launch_script)
        if self.batch is not None:
            self.pid = self.batch.submit(self.transport, max_seconds=max_seconds)
        else:
            self.pid = self.transport.start(self.layout.launch_script, cwd=self.layout.workdir)
        return self.pid

    # -- during the run ---------------------------------------------------------------------
    def follow(self) -> bytes:
        return self.follower.poll()

    def exit_code(self) -> int | None:
        """The workload's exit status once the launch script has recorded it."""
        raw = self.transport.read(self.layout.exit_code, 0, 64).strip()
        try:
            code = int(raw) if raw else None
        except ValueError:
            return None
        # A scheduler that requeued the job (preemption) runs it again: not its end.
        batch, pid = self.batch, self.pid
        if code is not None and batch is not None and pid is not None:
            return None if batch.requeued(self.transport, pid, self.layout.exit_code) else code
        return code

    def stopped_by_node(self) -> str | None:
        """Why the node's own watchdog stopped the job (e.g. "max_hours"), if it did."""
        return self.transport.read(self.layout.stop_reason, 0, 64).decode().strip() or None

    def free_disk_kb(self) -> int | None:
        """What is free on the disk the job works on, in KiB; None where `df` cannot say."""
        try:
            result = self.transport.run(["df", "-Pk", self.layout.workdir], check=False)
        except TransportError:
            return None  # the link is what failed: the caller says what it knows
        lines = result.stdout.splitlines() if result.ok else []
        fields = lines[1].split() if len(lines) > 1 else []
        return int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else None

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.batch is not None:
            return self.batch.alive(self.transport, self.pid)
        return self.transport.run(["kill", "-0", str(self.pid)], check=False).ok

    def stop_gracefully(
        self,
        clock: Clock,
        *,
        grace_s: float,
        poll_s: float,
        on_log: Callable[[bytes], None],
        forced: Callable[[], bool],
    ) -> int | None:
        """TERM the job's process group (the workload saves a checkpoint and exits) and wait up
        to `grace_s`.

        Returns its exit code, or None if it did not finish in time (teardown then kills it).
        """
        self.request_stop()
        deadline = clock.monotonic() + grace_s
        while True:
            if chunk := self.follow():
                on_log(chunk)
            code = self.exit_code()
            if code is not None or forced() or clock.monotonic() >= deadline:
                return code
            clock.sleep(poll_s)

    def stop_leftovers(self, grace_s: float) -> None:
        """Stop what the workload left running after it ended (`sleep 60 &`, a data loader's
        stray worker): found on the node by the job's folder in its environment, as teardown
        finds them (runtime/stop_job.sh). Before the last pull, so nothing still writes the
        checkpoints as they come home, and before the node is given back, so a node the
        provider fails to delete runs nothing of the job."""
        script = STOP_JOB_SCRIPT + "\nexit 0\n"
        self.transport.run(
            ["sh", "-c", script, "sh", self.layout.workdir, str(int(grace_s * 10))],
            timeout=grace_s + 30,
        )

    def push_checkpoints(self, runs_dir: Path) -> SyncReport:
        """Home's checkpoints back onto a node (a restart); the log copy there is not one."""
        return push_dir(
            self.transport, runs_dir, self.layout.checkpoints, skip=lambda path: path == "job.log"
        )

    def request_stop(self) -> None:
        """TERM the job's process group; the workload saves a checkpoint and exits."""
        if self.pid is not None and self.batch is not None:
            self.batch.request_stop(self.transport, self.pid)
        elif self.pid is not None:
            # The shell's own kill: `kill -TERM -PID` means the group there, while procps'
            # /usr/bin/kill wants `--` before it and dash's builtin refuses `--`.
            self.transport.run(["sh", "-c", 'kill -TERM -"$1"', "sh", str(self.pid)], check=False)

    def pull_checkpoints(self, runs_dir: Path) -> SyncReport:
        if self.uploads:
            self._let_uploads_finish()
        return pull_dir(self.transport, self.layout.checkpoints, runs_dir)

    def _let_uploads_finish(self) -> None:
        """A finished job's checkpoint uploader (checkpoints.upload) makes its last look within
        seconds; wait for it (up to a minute), so teardown does not cut its last upload."""
        self.transport.run(["sh", "-c", _UPLOADS_DONE, "sh", self.layout.workdir],
                           timeout=90, check=False)  # fmt: skip

    def write_private(self, text: str, remote: str) -> None:
        """A file only the node's user may read (an env file may hold secrets): 0600 here and
        on the node, and the local copy removed at once."""
        with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
            local = Path(folder) / "file"
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.transport.put(local, remote, mode=0o600)
