"""A workload that a batch scheduler runs (Slurm): what a NodeSession asks of it instead of a
detached process. The scheduler's job id stands where a process id would (it is recorded as
the node's pid, so an adopted job finds it again), liveness is the scheduler's word, a stop is
the scheduler's signal, and every change of the scheduler's state (PENDING with its reason and
place in the queue, RUNNING, ...) becomes a note in the job's events (`gpujobs status JOB`).
"""

from __future__ import annotations

from collections.abc import Callable

from gpujobs.clock import Clock
from gpujobs.providers.base import Node, SupportsBatchJobs
from gpujobs.remote.transport import Transport

# How long a job that has ended may stay COMPLETING (its processes being reaped or killed)
# before its final state says whether it ended or was requeued.
COMPLETING_WAIT_S = 60.0


class BatchJob:
    def __init__(
        self,
        provider: SupportsBatchJobs,
        node: Node,
        note: Callable[[str], None],
        clock: Clock,
        *,
        poll_s: float = 0.5,
    ) -> None:
        self.provider = provider
        self.node = node
        self.note = note
        self.clock = clock
        self.poll_s = poll_s
        self.seen = ""  # the last state noted, so each change is noted once
        self.ended: int | None = None  # the batch job whose exit code was found final

    def submit(self, transport: Transport, *, max_seconds: float | None) -> int:
        batch_id = self.provider.submit(transport, self.node, max_seconds=max_seconds)
        self.note(f"submitted slurm job {batch_id}")
        return batch_id

    def alive(self, transport: Transport, batch_id: int) -> bool:
        state = self.provider.batch_state(transport, batch_id)
        words = state.describe(batch_id)
        if words != self.seen:
            self.seen = words
            self.note(words)
        return state.live

    def request_stop(self, transport: Transport, batch_id: int) -> None:
        self.provider.request_stop(transport, batch_id)

    def requeued(self, transport: Transport, batch_id: int, exit_code_file: str) -> bool:
        """Whether the exit code the workload just wrote ends a run that the scheduler
        requeued (preempted, `scontrol requeue`): then the code is set aside, so the next run's
        is the one that counts, and the job is followed on. Asked only when a code appears."""
        if self.ended == batch_id:
            return False
        deadline = self.clock.monotonic() + COMPLETING_WAIT_S
        state = self.provider.batch_state(transport, batch_id)
        while state.state == "COMPLETING" and self.clock.monotonic() < deadline:
            self.clock.sleep(self.poll_s)
            state = self.provider.batch_state(transport, batch_id)
        if not state.live or state.state in ("RUNNING", "COMPLETING"):
            self.ended = batch_id  # its end: asked once, the answer stays
            return False
        transport.run(["mv", "-f", exit_code_file, f"{exit_code_file}.requeued"], check=False)
        self.seen = state.describe(batch_id)
        self.note(
            f"slurm requeued job {batch_id} ({self.seen}); the workload resumes from its last "
            "checkpoint when it runs again"
        )
        return True
