"""The public Python API: what the CLI does, as functions with typed answers and no printing.

    import gpujobs

    job = gpujobs.launch("templates/mnist-local.yaml", detach=True)
    print(job.wait().state)          # JobState.SUCCEEDED
    print(job.logs()[-500:])         # the end of the training log
    print(gpujobs.status()[0].cost_usd)

`launch`, `job`, `status`, `plan` and `budget` (jobs.py) build on the Controller (controller.py),
which the CLI uses too. Importing this package loads no cloud SDK, no torch and no pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpujobs.api.controller import (
        SPEC_FROM_PYTHON,
        Controller,
        JobDetail,
        JobView,
        default_controller,
    )
    from gpujobs.api.jobs import Job, JobStatus, budget, job, launch, plan, status
    from gpujobs.api.results import Results, read_results, training_verdict
    from gpujobs.driver_lock import DriverLock
    from gpujobs.lifecycle.events import CancelToken, EventSink

# Where each public name lives. Loaded when first asked for (PEP 562): `gpujobs status` imports
# gpujobs.api.controller, and Python runs this package's body first, so an eager import here
# would load every submodule for every command.
_HOMES = {
    "SPEC_FROM_PYTHON": "gpujobs.api.controller",
    "Controller": "gpujobs.api.controller",
    "JobDetail": "gpujobs.api.controller",
    "JobView": "gpujobs.api.controller",
    "default_controller": "gpujobs.api.controller",
    "Job": "gpujobs.api.jobs",
    "JobStatus": "gpujobs.api.jobs",
    "budget": "gpujobs.api.jobs",
    "job": "gpujobs.api.jobs",
    "launch": "gpujobs.api.jobs",
    "plan": "gpujobs.api.jobs",
    "status": "gpujobs.api.jobs",
    "Results": "gpujobs.api.results",
    "read_results": "gpujobs.api.results",
    "training_verdict": "gpujobs.api.results",
    "DriverLock": "gpujobs.driver_lock",
    "CancelToken": "gpujobs.lifecycle.events",
    "EventSink": "gpujobs.lifecycle.events",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gpujobs.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # asked once
    return value


__all__ = [
    "SPEC_FROM_PYTHON",
    "CancelToken",
    "Controller",
    "DriverLock",
    "EventSink",
    "Job",
    "JobDetail",
    "JobStatus",
    "JobView",
    "Results",
    "budget",
    "default_controller",
    "job",
    "launch",
    "plan",
    "read_results",
    "status",
    "training_verdict",
]
