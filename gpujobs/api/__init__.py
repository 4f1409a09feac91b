"""The public Python API: what the CLI does, as functions with typed answers and no printing.

    import gpujobs

    job = gpujobs.launch("templates/mnist-local.yaml", detach=True)
    print(job.wait().state)          # JobState.SUCCEEDED
    print(job.logs()[-500:])         # the end of the training log
    print(gpujobs.status()[0].cost_usd)

`launch`, `job`, `status`, `plan` and `budget` (jobs.py) build on the Controller (controller.py),
which the CLI uses too. Importing this package loads no cloud SDK, no torch and no pydantic.
"""

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
