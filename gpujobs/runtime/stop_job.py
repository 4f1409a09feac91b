"""Stopping every process of a job on a node, the same on every provider without containers.

The node-side script is a package resource (`stop_job.sh`, shellchecked in tests): the local
provider runs it here, the ssh provider on the host, so both stop the same processes the same way.
"""

from __future__ import annotations

import subprocess
from importlib import resources

from gpujobs.errors import NotTerminatedError

STOP_JOB_SCRIPT = resources.files("gpujobs.runtime").joinpath("stop_job.sh").read_text()


def stop_job_here(job_folder: str, grace_s: float) -> None:
    """Stop the job's processes on this machine (TERM, then KILL after `grace_s`)."""
    result = subprocess.run(
        ["sh", "-c", STOP_JOB_SCRIPT, "sh", job_folder, str(int(grace_s * 10))],
        capture_output=True,
        text=True,
        timeout=grace_s + 30,
        check=False,
    )
    if result.returncode != 0:
        raise NotTerminatedError(
            result.stderr.strip() or f"stopping the processes of {job_folder} failed"
        )
