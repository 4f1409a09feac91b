"""The sbatch command and batch script of one job, rendered from the spec and the job's folder.

The script is a package resource (job.sbatch, shellchecked); every value put into it is quoted
with shlex, and every option goes on sbatch's command line as one quoted word, never through
`#SBATCH` lines (whose parsing is sbatch's own, not a shell's).
"""

from __future__ import annotations

import math
import shlex
from importlib import resources
from string import Template

from gpujobs.providers.slurm.models import format_time_limit
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec

JOB_NAME_PREFIX = "gpujobs-"
# Beyond the node's own watchdog (budget.max_hours: TERM, and KILL a minute later), the
# scheduler's limit leaves this much for the checkpoint to be written before Slurm kills.
TIME_SLACK_S = 120.0
# Without any cap on the job (no max_hours, no max_usd), its time limit: never UNLIMITED,
# so a forgotten job cannot hold a node through the next maintenance window.
DEFAULT_TIME_S = 24 * 3600.0


def job_name(job_id: str) -> str:
    return f"{JOB_NAME_PREFIX}{job_id}"


def slurm_job_file(layout: NodeLayout) -> str:
    """Where the batch script records its Slurm job id (for `down` after a lost client)."""
    return f"{layout.workdir}/slurm-job-id"


def render_script(job_id: str, layout: NodeLayout) -> str:
    template = resources.files("gpujobs.providers.slurm").joinpath("job.sbatch").read_text()
    q = shlex.quote
    return Template(template).substitute(
        job_id=job_id,  # in a comment only; a job id is [a-z0-9-]
        workdir=q(layout.workdir),
        slurm_job_file=q(slurm_job_file(layout)),
        exit_code=q(layout.exit_code),
        stop_reason=q(layout.stop_reason),
        log=q(layout.log),
        launch_script=q(layout.launch_script),
    )


def hosts_file(layout: NodeLayout) -> str:
    """Where a multi-node job's batch script lists its nodes: `name address` a line."""
    return f"{layout.workdir}/slurm-hosts"


def go_file(layout: NodeLayout) -> str:
    """Made once every node's launch script is written: the batch script then runs srun."""
    return f"{layout.workdir}/slurm-go"


def render_group_script(job_id: str, layout: NodeLayout, nodes: int) -> str:
    """The batch script of a multi-node job (rank 0's folder is `layout`; node K's is the
    same path with `-nodeK` after it, as the lifecycle lays them out)."""
    template = resources.files("gpujobs.providers.slurm").joinpath("group.sbatch").read_text()
    q = shlex.quote
    return Template(template).substitute(
        job_id=job_id,
        nodes=int(nodes),
        workdir=q(layout.workdir),
        slurm_job_file=q(slurm_job_file(layout)),
        hosts_file=q(hosts_file(layout)),
        go_file=q(go_file(layout)),
    )


def time_limit_s(max_seconds: float | None, partition_limit_s: int | None) -> float:
    """The job's --time: its cap and the slack to checkpoint, within the partition's limit;
    a default day when nothing caps it."""
    wanted = DEFAULT_TIME_S if max_seconds is None else max_seconds + TIME_SLACK_S
    if partition_limit_s is not None:
        wanted = min(wanted, partition_limit_s)
    return max(wanted, 60.0)


def sbatch_argv(
    job_id: str,
    spec: JobSpec,
    layout: NodeLayout,
    script: str,
    *,
    partition: str | None,
    time_s: float,
) -> list[str]:
    """`sbatch --parsable ... SCRIPT`, each option one word (`--key=value`)."""
    assert spec.slurm is not None
    slurm, res = spec.slurm, spec.resources
    # sbatch expands %j, %u, ... in --output: a literal % in the folder is written %%.
    output = layout.log.replace("%", "%%")
    words = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name(job_id)}",
        f"--comment=gpujobs-job={job_id}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={res.cpus or 1}",
        f"--time={format_time_limit(time_s)}",
        f"--output={output}",
        "--open-mode=append",  # the launch script appends the workload's output to it too
        f"--chdir={layout.workdir}",
    ]
    if res.memory_gb:
        words.append(f"--mem={math.ceil(res.memory_gb * 1024)}M")
    if res.gpu_count:
        words.append(f"--gres={slurm.gres}:{res.gpu_count}")
    for option, value in (
        ("partition", partition),
        ("account", slurm.account),
        ("qos", slurm.qos),
        ("constraint", slurm.constraint),
    ):
        if value:
            words.append(f"--{option}={value}")
    words += slurm.option_words()
    words.append(script)
    return words


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)
