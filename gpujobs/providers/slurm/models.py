"""What Slurm's own commands say, as typed data: partitions from `sinfo`, jobs from `squeue`.

The commands are run with a fixed `-o` format of `|`-separated fields (no Slurm name can hold a
`|`), so parsing never depends on column widths or the cluster's locale.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# sinfo: partition, availability, nodes, CPUs per node, memory per node (MB), GRES, time limit.
SINFO_FORMAT = "%P|%a|%D|%c|%m|%G|%l"
# squeue: job id, name, state, reason, priority, partition, comment (last: it is free text).
SQUEUE_FORMAT = "%i|%j|%T|%r|%Q|%P|%k"
# States in which the scheduler still holds the job (it runs, waits, or is being requeued).
LIVE_STATES = frozenset(
    {
        "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
    }
)  # fmt: skip
_GRES_ITEM = re.compile(r"^(?P<name>[^:(]+)(?::(?P<type>[^:(]+))?(?::(?P<count>\d+))?")
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?:(?P<a>\d+):)?(?:(?P<b>\d+):)?(?P<c>\d+)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Partition(_Frozen):
    """One partition (one line of sinfo: a partition lists one line per node configuration)."""

    name: str
    default: bool
    up: bool
    nodes: int
    cpus: int  # per node
    memory_mb: int  # per node
    gpu_type: str | None  # the GRES type (a100), None when the GRES names none
    gpus: int  # per node
    time_limit_s: int | None  # None: infinite


class SlurmJob(_Frozen):
    job_id: int
    name: str
    state: str
    reason: str
    priority: int = 0
    partition: str = ""
    comment: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def parse_time_limit(text: str) -> int | None:
    """Slurm's [days-]hours:minutes:seconds (or minutes, or minutes:seconds) in seconds;
    None for "infinite"/"UNLIMITED"."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    days = int(match.group("days") or 0)
    parts = [int(p) for p in (match.group("a"), match.group("b"), match.group("c")) if p]
    if match.group("days") is not None:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_time_limit(seconds: float) -> str:
    """Whole minutes, rounded up, as sbatch --time takes them (at least one)."""
    return str(max(1, -(-int(seconds) // 60)))


def parse_gpus(gres: str) -> tuple[str | None, int]:
    """The GPUs in a GRES list such as `gpu:a100:4(S:0-1),shard:8` -> ("a100", 4)."""
    kind, total = None, 0
    for item in gres.split(","):
        match = _GRES_ITEM.match(item.strip())
        if match is None or match.group("name") != "gpu":
            continue
        count, kind_here = match.group("count"), match.group("type")
        if count is None and kind_here is not None and kind_here.isdigit():
            count, kind_here = kind_here, None  # gpu:4: a count, no type
        total += int(count or 1)
        kind = kind or kind_here
    return kind, total


def parse_sinfo(text: str) -> list[Partition]:
    partitions = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        name, avail, nodes, cpus, memory, gres, limit = fields
        gpu_type, gpus = parse_gpus(gres)
        partitions.append(
            Partition(
                name=name.rstrip("*"),
                default=name.endswith("*"),
                up=avail.strip() == "up",
                nodes=int(nodes),
                cpus=int(cpus.rstrip("+")),
                memory_mb=int(memory.rstrip("+")),
                gpu_type=gpu_type,
                gpus=gpus,
                time_limit_s=parse_time_limit(limit),
            )
        )
    return partitions


def parse_squeue(text: str) -> list[SlurmJob]:
    jobs = []
    for line in text.splitlines():
        fields = line.strip().split("|", 6)
        if len(fields) != 7 or not fields[0].isdigit():
            continue
        job_id, name, state, reason, priority, partition, comment = fields
        jobs.append(
            SlurmJob(
                job_id=int(job_id),
                name=name,
                state=state.split()[0],
                reason=reason,
                priority=int(priority) if priority.isdigit() else 0,
                partition=partition,
                comment=comment,
            )
        )
    return jobs
