"""A real two-node Slurm cluster on 127.0.0.1 for the slurm provider's tests: munged, one
slurmctld and two slurmd (n1 on port 17001, n2 on 17002, both NodeAddr=127.0.0.1), without
cgroups (proctrack/linuxproc, task/none), accounting or slurmdbd, so it runs in a container.

`python3 -m tests.slurm_cluster` starts it (CI runs it before pytest); `slurm_cluster()` starts
it when it is not up and says why it cannot. It writes /etc/slurm/slurm.conf (the clients on
the "login node", reached through the loopback sshd, read it from there), so it needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
STATE = Path("/var/tmp/gpujobs-slurm")
PARTITION = "debug"
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
MEMORY_MB = 2000
MAX_TIME = "02:00:00"

NODE = f"CPUs={CPUS_PER_NODE} RealMemory={MEMORY_MB} Gres=gpu:1 State=UNKNOWN"
SLURM_CONF = f"""\
# Written by gpujobs' tests (tests/slurm_cluster.py): a two-node cluster on loopback.
ClusterName=gpujobs-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
StateSaveLocation={STATE}/ctld
SlurmctldPidFile={STATE}/slurmctld.pid
SlurmctldLogFile={STATE}/slurmctld.log
SlurmdSpoolDir={STATE}/slurmd-%n
SlurmdPidFile={STATE}/slurmd-%n.pid
SlurmdLogFile={STATE}/slurmd-%n.log
NodeName=n1 NodeAddr=127.0.0.1 NodeHostname=localhost Port=17001 {NODE}
NodeName=n2 NodeAddr=127.0.0.1 NodeHostname=localhost Port=17002 {NODE}
PartitionName={PARTITION} Nodes=n1,n2 Default=YES MaxTime={MAX_TIME} State=UP
"""
# A GPU count without device files: the scheduler counts it, nothing is bound (no GPU here).
GRES_CONF = "NodeName=n1,n2 Name=gpu File=/dev/null Flags=CountOnly\n"


class ClusterUnavailable(RuntimeError):
    """Slurm cannot run here (not installed, not root); the message says which."""


@dataclass(frozen=True)
class SlurmCluster:
    partition: str = PARTITION
    nodes: tuple[str, ...] = NODES
    cpus_per_node: int = CPUS_PER_NODE

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def cancel_all(self) -> None:
        subprocess.run(["scancel", "--partition", self.partition], check=False)


def _up() -> bool:
    try:
        answer = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in answer.stdout.splitlines() if line.strip())
    return answer.returncode == 0 and all(
        states.get(node, "").rstrip("*") in ("idle", "alloc", "mix", "comp") for node in NODES
    )


def _require_tools() -> None:
    missing = [
        tool
        for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]
    if missing:
        raise ClusterUnavailable(
            f"{', '.join(missing)} not installed: `apt-get install slurm-wlm munge`"
        )
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster writes /etc/slurm and runs as root")


def _start_munge() -> None:
    socket = Path("/run/munge/munge.socket.2")
    if socket.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
    key.chmod(0o600)
    subprocess.run(["/usr/sbin/munged", "--force"], check=True)


def _wait(check: object, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    logs = "\n".join(
        f"--- {log}\n" + "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        for log in sorted(STATE.glob("*.log"))
    )
    raise ClusterUnavailable(f"{what} within {timeout_s:g}s; logs:\n{logs}")


def slurm_cluster() -> SlurmCluster:
    """The cluster, started unless it is up already (by CI or an earlier session)."""
    _require_tools()
    if _up():
        return SlurmCluster()
    _start_munge()
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "ctld").mkdir(exist_ok=True)
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    (CONF_DIR / "slurm.conf").write_text(SLURM_CONF)
    (CONF_DIR / "gres.conf").write_text(GRES_CONF)
    # Stale daemons of an earlier config would answer with it: stop the ones we recorded.
    for pid_file in STATE.glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text().strip()), 15)
    time.sleep(0.5)
    subprocess.run(["/usr/sbin/slurmctld", "-c"], check=True)  # -c: a clean state
    for node in NODES:
        (STATE / f"slurmd-{node}").mkdir(exist_ok=True)
        subprocess.run(["/usr/sbin/slurmd", "-N", node], check=True)
    _wait(_up, "the two nodes were not idle", 60)
    return SlurmCluster()


if __name__ == "__main__":
    try:
        slurm_cluster()
    except (ClusterUnavailable, subprocess.CalledProcessError) as exc:
        print(f"slurm test cluster: {exc}", file=sys.stderr)
        sys.exit(1)
    print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout, end="")
