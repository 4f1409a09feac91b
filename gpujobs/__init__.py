"""gpujobs: run a PyTorch training job on the cheapest GPU you may get, and always clean up.

From Python: `gpujobs.launch(spec) -> Job`, `gpujobs.job(ref)`, `gpujobs.status()`,
`gpujobs.plan(spec)`, `gpujobs.budget()` (see gpujobs.api). They load on first use, so
`import gpujobs` and `gpujobs --help` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gpujobs.api import Job, JobStatus, budget, job, launch, plan, status

_API = frozenset({"Job", "JobStatus", "budget", "job", "launch", "plan", "status"})
__all__ = ["Job", "JobStatus", "__version__", "budget", "job", "launch", "plan", "status"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from gpujobs import api

        return getattr(api, name)
    raise AttributeError(f"module 'gpujobs' has no attribute {name!r}")
