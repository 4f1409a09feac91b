"""A workload that a batch scheduler runs (Slurm): what a NodeSession asks of it instead of a
detached process. The scheduler's job id stands where a process id would (it is recorded as
the node's pid, so an adopted job finds it again), liveness is the scheduler's word, a stop is
the scheduler's signal, and every change of the scheduler's state (PENDING with its reason and
place in the queue, RUNNING, ...) becomes a note in the job's events (`gpujobs status JOB`).
"""

from __future__ import annotations

from collections.abc import Callable

from gpujobs.providers.base import Node, SupportsBatchJobs
from gpujobs.remote.transport import Transport


class BatchJob:
    def __init__(
        self, provider: SupportsBatchJobs, node: Node, note: Callable[[str], None]
    ) -> None:
        self.provider = provider
        self.node = node
        self.note = note
        self.seen = ""  # the last state noted, so each change is noted once

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
