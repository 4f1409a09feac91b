"""The workload sessions of a job's nodes, handled as one group.

A multi-node (torchrun) job lives and ends together: its exit code is the group's, one failed
node stops the others, a stop goes to every node at once, and the nodes' logs are merged into
one stream with each line led by its node's rank. A one-node job is a group of one whose log
passes through untouched. Separate from the launch state machine (lifecycle.py), which only
asks the group whether it has exited, whether it is alive, to stop, and to forward its log.
(Not to be confused with group.py: the rendezvous settings torchrun is started with.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gpujobs.clock import Clock
from gpujobs.errors import JobFailedError, ProvisioningError, TransportError
from gpujobs.lifecycle.events import CancelToken
from gpujobs.lifecycle.node_session import NodeSession

# Free space below this on the job's disk, with no exit code written, means the disk filled.
_FULL_DISK_KB = 64


class GroupSessions:
    """One NodeSession per node of a job, in rank order; `log` gets the merged log."""

    def __init__(
        self,
        *,
        log: Callable[[bytes], None],
        note: Callable[[str], None],
        clock: Clock,
        cancel: CancelToken,
        grace_s: float,
        poll_s: float,
    ) -> None:
        self.log = log
        self.note = note
        self.clock = clock
        self.cancel = cancel
        self.grace_s = grace_s  # how long a stopping workload gets to write its checkpoint
        self.poll_s = poll_s
        self.sessions: list[NodeSession] = []  # one per node, in rank order
        self.partial: dict[int, bytes] = {}  # a node's unfinished log line (prefixed output)
        self.failed_rank = 0  # the node whose exit code failed the job

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator[NodeSession]:
        return iter(self.sessions)

    def clear(self) -> None:
        """Forget the sessions (a new setup or attach fills the group again)."""
        self.sessions = []

    def add(self, session: NodeSession) -> None:
        """The next node's session (nodes are added in rank order)."""
        self.sessions.append(session)

    @property
    def head(self) -> NodeSession:
        """Rank 0's session: the one checkpoints come from."""
        return self.all()[0]

    def all(self) -> list[NodeSession]:
        if not self.sessions:
            raise ProvisioningError("no node session (setup did not run)")
        return self.sessions

    @property
    def started(self) -> bool:
        """Whether the workload was started (so there may be something to bring home)."""
        return bool(self.sessions) and self.sessions[0].pid is not None

    def close(self) -> None:
        for session in self.sessions:
            session.transport.close()

    def drop(self) -> None:
        """Close and forget every session: their nodes are gone."""
        self.close()
        self.sessions = []

    # -- the workload -------------------------------------------------------------------------
    def exit_code(self) -> int | None:
        """The job's exit code once every node's workload has exited; when one node fails,
        the others are stopped at once (a group cannot go on without a member)."""
        codes = [session.exit_code() for session in self.all()]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed and None in codes:
            rank, code = failed[0]
            self.stop(f"node {rank} exited with code {code}")
            codes = [session.exit_code() for session in self.all()]
        if None in codes and not failed:
            return None
        if failed:
            self.failed_rank, code = failed[0]
            return code or 1
        return 0

    def check_alive(self, confirmed_loss: Callable[[], JobFailedError | None]) -> None:
        """Raise when a node's workload vanished without an exit code: the node's loss when
        its provider confirms one (`confirmed_loss`), else a failure."""
        for rank, session in enumerate(self.all()):
            if session.alive() or session.exit_code() is not None:
                continue
            self.forward_log()
            if lost := confirmed_loss():
                raise lost
            where = f"node {rank}: " if len(self.sessions) > 1 else ""
            free_kb = session.free_disk_kb()
            if free_kb is not None and free_kb < _FULL_DISK_KB:
                # Its launch script could not write the exit code: a full disk, not a reboot.
                raise JobFailedError(
                    f"{where}the node's disk is full ({free_kb} KiB free in "
                    f"{session.layout.workdir}): the workload could not write (its exit code "
                    "included; its log says what failed); free space there, keep fewer "
                    "checkpoints (checkpoints.keep) or ask for more disk (resources.disk_gb)"
                )
            raise JobFailedError(
                f"{where}the workload's process vanished without an exit code "
                "(killed from outside, or the node rebooted)"
            )

    def stop(self, reason: str) -> None:
        self.note(f"stopping the workload ({reason}); it saves a checkpoint first")
        head, *others = self.all()
        for session in others:  # TERM every node at once: the group agrees on when it stops
            session.request_stop()
        head.stop_gracefully(
            self.clock,
            grace_s=self.grace_s,
            poll_s=self.poll_s,
            on_log=lambda chunk: self.log(self._prefixed(0, chunk) if others else chunk),
            forced=lambda: self.cancel.forced,
        )

    def stop_leftovers(self, grace_s: float) -> list[str]:
        """Each node's stray processes stopped (NodeSession.stop_leftovers); returns why a
        node could not be asked, for a note: teardown still ends it."""
        problems = []
        for rank, session in enumerate(self.sessions):
            try:
                session.stop_leftovers(grace_s)
            except TransportError as exc:
                problems.append(f"node {rank}: {exc}")
        return problems

    # -- the log ------------------------------------------------------------------------------
    def forward_log(self) -> None:
        for rank, session in enumerate(self.sessions):
            chunk = session.follow()
            if chunk and len(self.sessions) > 1:
                chunk = self._prefixed(rank, chunk)
            if chunk:
                self.log(chunk)

    def flush_log(self) -> None:
        """The nodes' last lines that never got their newline."""
        for rank, rest in sorted(self.partial.items()):
            self.log(f"[node {rank}] ".encode() + rest + b"\n")
        self.partial.clear()

    def _prefixed(self, rank: int, chunk: bytes) -> bytes:
        """Whole lines of node `rank`'s log, each led by its rank; a partial line waits."""
        lines = (self.partial.pop(rank, b"") + chunk).split(b"\n")
        if rest := lines.pop():  # after the last newline
            self.partial[rank] = rest
        lead = f"[node {rank}] ".encode()
        return b"".join(lead + line + b"\n" for line in lines)
