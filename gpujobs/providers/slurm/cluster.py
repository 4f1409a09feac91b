"""What the login node's own commands say and do, over its transport: the cluster's partitions
(sinfo), its queue (squeue), and the shell scripts the provider runs there. Every script takes its
values as positional arguments ($1, $2...), never spliced into its text.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gpujobs.errors import TransportError
from gpujobs.providers.base import BatchState
from gpujobs.providers.slurm.models import (
    SINFO_FORMAT,
    SQUEUE_FORMAT,
    Partition,
    SlurmJob,
    parse_sinfo,
    parse_squeue,
)
from gpujobs.remote.ssh import SSHTransport
from gpujobs.remote.transport import Transport

PREPARE = r"""
root=$1
case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
umask 077; mkdir -p "$root/work" "$root/venvs" || exit 4
cd "$root" && pwd -P
"""
# Stop the job's Slurm jobs (TERM to every process: the workload checkpoints; then a plain
# scancel, which KILLs after the cluster's KillWait), wait until the queue no longer holds
# them, and remove its folder. A squeue that fails (controller down) leaves the folder alone.
STOP_AND_REMOVE = r"""
name=$1; w=$2; grace=$3
case $w in
  */work/*) ;;
  *) echo "refusing to remove $w: not a gpujobs job folder" >&2; exit 3 ;;
esac
queued() {
  out=$(squeue -h --name="$name" -o %i) || { echo "squeue failed: cannot confirm" >&2; exit 6; }
  [ -n "$out" ]
}
if queued; then
  scancel --signal=TERM --full --name="$name"
  n=0; while queued && [ "$n" -lt "$grace" ]; do sleep 1; n=$((n + 1)); done
  scancel --name="$name"
  n=0; while queued && [ "$n" -lt 120 ]; do sleep 1; n=$((n + 1)); done
  if queued; then echo "slurm still holds job $name after scancel" >&2; exit 5; fi
fi
rm -rf -- "$w"
[ ! -e "$w" ]
"""
# Cancel one Slurm job and wait until the queue no longer holds it (its processes are gone).
CANCEL_AND_WAIT = r"""
scancel "$1" || exit 1
n=0
while [ -n "$(squeue -h -j "$1" -t PD,R,CG,CF,S,RQ,SO,ST 2>/dev/null)" ]; do
  [ "$n" -ge 100 ] && { echo "still in the queue after 100 s" >&2; exit 5; }
  sleep 1; n=$((n + 1))
done
"""
LIST_FOLDERS = 'cd "$1/work" 2>/dev/null && for d in */; do [ -d "$d" ] && echo "${d%/}"; done'


def partitions(transport: Transport) -> list[Partition]:
    result = transport.run(["sinfo", "-h", "-o", SINFO_FORMAT], timeout=60, check=False)
    if not result.ok:
        raise TransportError(f"sinfo failed on the login node: {result.tail(2)}")
    return parse_sinfo(result.stdout)


def batch_state(transport: Transport, batch_id: int) -> BatchState:
    result = transport.run(
        # Every state: a job that just ended shows how (COMPLETED, TIMEOUT, PREEMPTED).
        ["squeue", "-h", "-j", str(batch_id), "-t", "all", "-o", SQUEUE_FORMAT],
        check=False,
    )
    if not result.ok:
        if "Invalid job id" in result.stderr:
            return BatchState(live=False, state="")
        # The controller did not answer: not a sign the job is gone.
        return BatchState(live=True, state="UNKNOWN", reason=result.tail(1))
    [job, *_] = parse_squeue(result.stdout) or [None]
    if job is None:
        return BatchState(live=False, state="")
    position = queue_position(transport, job) if job.state == "PENDING" else None
    return BatchState(live=job.live, state=job.state, reason=job.reason, position=position)


def queue_position(transport: Transport, job: SlurmJob) -> int | None:
    waiting = queue(transport, ["-t", "PENDING", "-p", job.partition, "--sort=-p,i"])
    ids = [other.job_id for other in waiting]
    return ids.index(job.job_id) + 1 if job.job_id in ids else None


def queue(transport: Transport, filters: list[str]) -> list[SlurmJob]:
    result = transport.run(["squeue", "-h", *filters, "-o", SQUEUE_FORMAT], check=False)
    if not result.ok:
        raise TransportError(f"squeue failed on the login node: {result.tail(2)}")
    return parse_squeue(result.stdout)


class Login:
    """`with self._login() as transport:` closes the login node's connection after use."""

    def __init__(self, transport: SSHTransport) -> None:
        self.transport = transport

    def __enter__(self) -> SSHTransport:
        return self.transport

    def __exit__(self, *exc_info: object) -> None:
        self.transport.close()


def put_text(transport: Transport, text: str, remote: str) -> None:
    with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
        local = Path(folder) / "file"
        local.write_text(text)
        transport.put(local, remote, mode=0o700)
