"""Interactive sessions (`gpujobs dev`): JupyterLab on the node, forwarded here, with the job's
guards (dollar cap, max_hours) plus an idle stop. The session is a job whose command is
JupyterLab (spec.dev_command); this module prepares its spec, says where it is, and watches it.

Idle means: no kernel busy, no kernel message since the last look, and the GPUs under
`dev.gpu_idle_percent`, for `dev.idle_minutes` as this machine's clock counts. The stop is the
driver's own cancel, so the notebooks and outputs (in the checkpoint folder) come home before
teardown, as any cancelled job's checkpoints do.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpujobs.clock import Clock
from gpujobs.errors import GpuJobsError
from gpujobs.lifecycle.events import PassingSink
from gpujobs.lifecycle.notify import IDLE_STOP_MARK
from gpujobs.state import JobState

if TYPE_CHECKING:
    from gpujobs.api.controller import Controller
    from gpujobs.api.live import LocalPort, NodeAccess
    from gpujobs.lifecycle.events import CancelToken, EventSink
    from gpujobs.remote.forward import PortForward
    from gpujobs.spec import DevSession, JobSpec

TOKEN_ENV = "JUPYTER_TOKEN"
_ENDS = (JobState.RECOVERING, JobState.COLLECTING, JobState.TEARING_DOWN)
_GPU_QUERY = (
    "command -v nvidia-smi >/dev/null 2>&1 || exit 0; "
    "nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits"
)


def with_token(spec: JobSpec) -> tuple[JobSpec, str]:
    """The session's spec with a fresh Jupyter token in its environment (stored redacted),
    unless the spec sets its own."""
    if spec.env.get(TOKEN_ENV):
        return spec, str(spec.env[TOKEN_ENV])
    token = secrets.token_urlsafe(24)
    return spec.model_copy(update={"env": {**spec.env, TOKEN_ENV: token}}), token


@dataclass(frozen=True)
class Activity:
    marker: str  # Jupyter's last_activity values: a change means someone did something
    busy: bool  # a kernel executing, or the GPUs in use


class IdleWatch:
    """Decides when a session has been idle long enough; fed one observation at a time."""

    def __init__(self, clock: Clock, idle_s: float) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self._marker: str | None = None
        self._active_at = clock.monotonic()

    def observe(self, activity: Activity) -> bool:
        """Record an observation; True once the session has been idle for idle_s."""
        now = self.clock.monotonic()
        if activity.busy or activity.marker != self._marker:
            self._marker = activity.marker
            self._active_at = now
        return now - self._active_at >= self.idle_s

    @property
    def idle_for_s(self) -> float:
        return self.clock.monotonic() - self._active_at


def jupyter_activity(
    base_url: str, token: str, gpu_percent: Callable[[], float], dev: DevSession
) -> Activity:
    """One look at the kernels (/api/kernels: their last message, busy or idle) and the GPUs.
    The server's own last_activity (/api/status) is not used: every API request, this look
    included, moves it."""
    import httpx

    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        kernels = client.get("/api/kernels").raise_for_status().json()
    marks = [f"{k.get('id')}@{k.get('last_activity')}" for k in kernels]
    busy = any(k.get("execution_state") == "busy" for k in kernels)
    return Activity("|".join(marks), busy or gpu_percent() >= max(dev.gpu_idle_percent, 0.01))


class DevSink(PassingSink):
    """Passes everything to `inner`; once the session runs, forwards JupyterLab, prints its
    URL with the token, and stops the session when it has been idle for dev.idle_minutes."""

    def __init__(
        self,
        inner: EventSink,
        controller: Controller,
        spec: JobSpec,
        cancel: CancelToken,
        *,
        poll_s: float = 15.0,
    ) -> None:
        assert spec.dev is not None
        super().__init__(inner)
        self.controller = controller
        self.dev = spec.dev
        self.token = str(spec.env.get(TOKEN_ENV, ""))
        self.cancel = cancel
        self.poll_s = poll_s
        self.forward: PortForward | LocalPort | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.url = ""

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self.inner.state(job_id, state, message)
        if state is JobState.RUNNING:
            self._end()
            self._begin(job_id)
        elif state in _ENDS or state.is_terminal:
            self._end()

    def _begin(self, job_id: str) -> None:
        from gpujobs.api.live import node_access

        try:
            access = node_access(self.controller, job_id, 0)
            self.forward = self._open_forward(access)
        except GpuJobsError as exc:
            self.inner.note(f"JupyterLab not forwarded: {exc}")
            return
        self.url = f"{self.forward.url}/lab?token={self.token}"
        self.inner.note(f"JupyterLab: {self.url}")
        gpu = _gpu_probe(self.controller, access)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(self.forward.url, gpu), name="idle-watch", daemon=True
        )
        self._thread.start()

    def _open_forward(self, access: NodeAccess) -> PortForward | LocalPort:
        """Here on port+10000 (8888 -> 18888), else any free one: not the node's own number,
        which a notebook server on this laptop often holds already (and which, when the node
        is this machine, JupyterLab is about to take)."""
        from gpujobs.api.live import open_forward

        if access.target is None:
            return open_forward(self.controller, access, self.dev.port)
        wanted = self.dev.port + 10000
        if wanted <= 65535:
            with contextlib.suppress(GpuJobsError):
                return open_forward(
                    self.controller, access, self.dev.port, wanted, on_note=self.inner.note
                )
        return open_forward(self.controller, access, self.dev.port, 0, on_note=self.inner.note)

    def _watch(self, base_url: str, gpu: Callable[[], float]) -> None:
        clock = self.controller.clock
        watch: IdleWatch | None = None  # counts from when JupyterLab first answers
        idle_s = self.dev.idle_minutes * 60
        # Several looks per idle period, so the stop comes close to when it is due.
        poll_s = min(self.poll_s, max(idle_s / 6, 0.5))
        while not self._stop.wait(poll_s):
            try:
                activity = jupyter_activity(base_url, self.token, gpu, self.dev)
            except Exception:  # a dropped link is neither idleness nor activity
                if watch is None:
                    continue  # still starting (a server that never starts meets the caps)
                activity = Activity(marker="unreachable", busy=False)
            if watch is None:
                watch = IdleWatch(clock, idle_s)
            if watch.observe(activity):
                minutes = watch.idle_for_s / 60
                self.note(
                    f"{IDLE_STOP_MARK}: idle for {minutes:.1f} min (dev.idle_minutes "
                    f"{self.dev.idle_minutes:g}); the notebooks come home before teardown"
                )
                self.cancel.cancel(f"idle for {minutes:.1f} min")
                return

    def _end(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None
        if self.forward is not None:
            self.forward.close()
            self.forward = None


def _gpu_probe(controller: Controller, access: object) -> Callable[[], float]:
    """The busiest GPU's use in percent (0 without nvidia-smi), over its own connection."""
    from gpujobs.api.live import NodeAccess
    from gpujobs.remote.connect import connect_node

    assert isinstance(access, NodeAccess)
    node = access.node

    def percent() -> float:
        transport = connect_node(node, controller.home, reconnect_window_s=30)
        try:
            result = transport.run(["sh", "-c", _GPU_QUERY], timeout=30, check=False)
        finally:
            with contextlib.suppress(Exception):
                transport.close()
        values = [float(v) for v in result.stdout.split() if v.replace(".", "", 1).isdigit()]
        return max(values, default=0.0)

    return percent
