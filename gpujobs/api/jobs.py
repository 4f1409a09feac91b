"""gpujobs from Python: launch a job and watch it from a notebook or a script, with typed
answers and no printing. Each function takes an optional `controller` (tests and embedders hand
their own; by default, this machine's gpujobs home, as the CLI uses).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpujobs.api.controller import Controller, JobView, default_controller
from gpujobs.errors import GpuJobsError
from gpujobs.state import JobState

if TYPE_CHECKING:
    from gpujobs.lifecycle.events import EventSink
    from gpujobs.money.report import BudgetReport
    from gpujobs.placement.planner import Plan
    from gpujobs.spec import JobSpec

# What a spec may be given as: a YAML file's path, a parsed JobSpec, or the same mapping a YAML
# file would hold (relative local paths then resolve against the working directory).
SpecLike = "JobSpec | Mapping[str, Any] | str | os.PathLike[str]"


@dataclass(frozen=True)
class JobStatus:
    """One job as the store has it at one moment."""

    id: str
    name: str
    state: JobState
    placement: str | None
    created_at: float
    finished_at: float | None
    exit_code: int | None
    error: str | None
    runs_dir: Path
    cost_usd: float
    cap_usd: float | None
    cap_hours: float | None
    restarts: int
    driver_lost: bool

    @property
    def done(self) -> bool:
        return self.state.is_terminal

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


def _status_of(view: JobView, cost_usd: float) -> JobStatus:
    record = view.record
    return JobStatus(
        id=record.id,
        name=record.name,
        state=record.state,
        placement=record.placement,
        created_at=record.created_at,
        finished_at=record.finished_at,
        exit_code=record.exit_code,
        error=record.error,
        runs_dir=Path(record.runs_dir),
        cost_usd=cost_usd,
        cap_usd=record.cap_usd,
        cap_hours=record.cap_hours,
        restarts=record.restarts,
        driver_lost=view.driver_lost,
    )


class Job:
    """A handle on one job. Every method reads the store afresh, so a handle stays true while a
    detached driver (or another process) moves the job on."""

    def __init__(self, job_id: str, controller: Controller) -> None:
        self.id = job_id
        self._controller = controller

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.state.value})"

    def status(self) -> JobStatus:
        view = self._controller.view(self._controller.store.job(self.id))
        return _status_of(view, self._controller.costs([self.id]).get(self.id, 0.0))

    @property
    def state(self) -> JobState:
        return self._controller.store.job(self.id).state

    @property
    def runs_dir(self) -> Path:
        """Where the checkpoints, metrics and log come home."""
        return Path(self._controller.store.job(self.id).runs_dir)

    def logs(self, *, node: int = 0) -> str:
        """The job's log (node `node`'s) as this machine has it now."""
        chunks = self._controller.follow_log(self.id, follow=False, node=node)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def follow(self, *, node: int = 0, poll_s: float = 0.5) -> Iterator[str]:
        """The log as it arrives, until the job ends (or its driver is gone)."""
        for chunk in self._controller.follow_log(self.id, follow=True, node=node, poll_s=poll_s):
            yield chunk.decode("utf-8", errors="replace")

    def wait(self, timeout: float | None = None, *, poll_s: float = 1.0) -> JobStatus:
        """Block until the job ends (or its driver is lost); TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.status()
            if current.done or current.driver_lost:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.id} is still {current.state.value} after {timeout:g}s")
            time.sleep(poll_s)

    def down(self) -> JobStatus:
        """Cancel the job and tear down what it started; its checkpoint comes home first."""
        self._controller.down(self.id)
        return self.status()


def launch(
    spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str],
    *,
    detach: bool = False,
    runs_dir: str | os.PathLike[str] = "runs",
    resume_from: str | None = None,
    on_event: EventSink | None = None,
    controller: Controller | None = None,
) -> Job:
    """Plan, provision, run and collect a job, as `gpujobs launch` does.

    detach=False drives the job in this process and returns once it has ended (Ctrl-C, or the
    notebook's interrupt, cancels it cleanly: the checkpoint still comes home). detach=True
    hands it to a driver process of its own and returns at once; the job outlives this one.
    `resume_from` names a finished or cancelled job: the new one starts from its checkpoints
    (with this spec's args, e.g. more epochs). A spec no placement can satisfy raises (nothing
    is started or recorded).
    """
    controller = controller or default_controller()
    parsed, spec_path = _load(spec)
    _warn_notes(parsed)
    controller.preflight(parsed, source=str(spec_path or "the spec"))
    record, lock = controller.submit(parsed, spec_path, Path(runs_dir), resume_from=resume_from)
    if detach:
        controller.spawn_detached(record.id, parsed, lock)
        return Job(record.id, controller)
    from gpujobs.lifecycle.events import CancelToken

    cancel = CancelToken()
    with _cancel_on_interrupt(cancel):
        controller.drive(record.id, parsed, lock, cancel, on_event)
    return Job(record.id, controller)


def job(ref: str, *, controller: Controller | None = None) -> Job:
    """A handle on a job known here, by id, id prefix or name."""
    controller = controller or default_controller()
    return Job(controller.find(ref).id, controller)


def status(*, show_all: bool = False, controller: Controller | None = None) -> list[JobStatus]:
    """Active jobs and the most recent ones (every job with show_all), newest first."""
    controller = controller or default_controller()
    views, _total = controller.overview(show_all=show_all)
    costs = controller.costs([view.record.id for view in views])
    return [_status_of(view, costs.get(view.record.id, 0.0)) for view in views]


def plan(
    spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str],
    *,
    controller: Controller | None = None,
) -> Plan:
    """Where the spec would run: placements cheapest first, and why every other offer was
    dropped. Starts nothing."""
    controller = controller or default_controller()
    parsed, _path = _load(spec)
    _warn_notes(parsed)
    return controller.plan(parsed)


def budget(*, show_all: bool = False, controller: Controller | None = None) -> BudgetReport:
    """Your budgets and what is left, spend per job, provider, month and day."""
    controller = controller or default_controller()
    return controller.budget_report(show_all=show_all)


def _load(
    spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str],
) -> tuple[JobSpec, Path | None]:
    from gpujobs.spec import JobSpec, load_spec, parse_spec

    if isinstance(spec, JobSpec):
        return spec, None
    if isinstance(spec, Mapping):
        import yaml

        # Through the same parser as a file, so errors read the same and paths resolve.
        text = yaml.safe_dump(dict(spec), sort_keys=False)
        return parse_spec(text, label="<spec>", base_dir=Path.cwd()), None
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        return load_spec(path), path
    raise GpuJobsError(f"launch: give a spec file's path, a mapping or a JobSpec, not {spec!r}")


def _warn_notes(spec: JobSpec) -> None:
    """The workload's advice on the args (transfer without weights trains from scratch) as a
    UserWarning, which a notebook shows once, rather than a print."""
    for note in spec.workload_notes():
        warnings.warn(note, UserWarning, stacklevel=3)


@contextlib.contextmanager
def _cancel_on_interrupt(cancel: Any) -> Iterator[None]:
    """Ctrl-C (a notebook's interrupt) and SIGTERM cancel the job instead of unwinding through
    a provider call; the old handlers come back afterwards. Off the main thread, signals
    cannot be caught: the job then runs to its end or its cap."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        cancel.cancel(f"cancelled by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
