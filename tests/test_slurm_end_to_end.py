"""The slurm provider against a real two-node Slurm (tests/slurm_cluster.py), its login node
the loopback sshd: a command job and mnist through `gpujobs launch`, a job that waits for
resources and says why in `gpujobs status`, and a cancel while the job runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gpujobs.paths import HomeLayout
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec
from tests.slurm_cluster import SlurmCluster


def slurm_spec(folder: Path, sshd: LoopbackSshd, body: str, name: str = "on-slurm") -> Path:
    shared = folder / "shared fs"  # the login and compute nodes' shared filesystem
    return write_spec(
        folder,
        f"""
        name: {name}
        providers: [slurm]
        slurm:
          login: "{sshd.target}"
          identity_file: {sshd.client_key}
          workdir: {shared}
        """
        + body,
    )


def job_detail(job_id: str) -> dict:
    return json.loads(gpujobs_cli("status", job_id, "--json").stdout)


def submitted(detail: dict) -> int:
    [batch_id] = [
        int(event["message"].rsplit(" ", 1)[1])
        for event in detail["events"]
        if event["message"].startswith("submitted slurm job")
    ]
    return batch_id


def queued(name: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "--name", name, "-o", "%i %T"], capture_output=True, text=True
    ).stdout.strip()


def test_a_command_runs_on_a_compute_node_within_its_time_limit(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        command: "echo \\"hello from $SLURM_JOB_NODELIST as job $SLURM_JOB_ID\\"; sleep 1"
        budget: {max_hours: 0.5}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["state"] == "SUCCEEDED" and job["placement"] == "slurm/debug"
    batch_id = submitted(job_detail(job["id"]))
    assert f"as job {batch_id}" in done.stdout, "the log streamed from the job's output file"
    shown = subprocess.run(["scontrol", "show", "job", str(batch_id)], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert f"JobName=gpujobs-{job['id']}" in shown
    assert "TimeLimit=00:32:00" in shown, "--time: the 30 min cap and 2 min to checkpoint"
    assert f"Comment=gpujobs-job={job['id']}" in shown
    assert not (tmp_path / "shared fs" / "work" / job["id"]).exists(), "teardown removed it"
    assert queued(f"gpujobs-{job['id']}") == ""


def test_mnist_trains_under_slurm_and_its_checkpoints_come_home(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        workload: mnist_cnn
        args: {synthetic: 300, epochs: 2, batch_size: 32, seed: 1}
        checkpoints: {every_minutes: 1, keep: 2}
        budget: {max_hours: 1}
        """,
        name="mnist-slurm",
    )
    done = gpujobs_cli("launch", str(spec), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 2/2" in done.stdout
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    checkpoints = sorted(Path(job["runs_dir"]).glob("ckpt-*.pt"))
    assert 1 <= len(checkpoints) <= 2
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    assert state["epoch"] in (1, 2)
    assert any((tmp_path / "shared fs" / "venvs").iterdir()), "the venv stays, a cache"


def _launch(spec: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "launch", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    what: str,
    check: object,
    timeout_s: float = 60,
    launcher: subprocess.Popen[str] | None = None,
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():  # type: ignore[operator]
            return found
        if launcher is not None and launcher.poll() is not None:
            out, err = launcher.communicate()
            raise AssertionError(f"launch ended before {what}: {out[-2000:]}{err[-2000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout_s:g}s")


def _the_job() -> dict | None:
    jobs = json.loads(gpujobs_cli("status", "--json").stdout or "[]")
    return jobs[0] if jobs else None


def test_a_job_waiting_for_resources_shows_why_then_runs(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--nodes=2", "--job-name=blocker",
         "--output=/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        command: echo finally ran
        budget: {max_hours: 1}
        """,
    )
    launcher = _launch(spec)
    try:
        job = _wait_for("job", _the_job, launcher=launcher)

        def pending_note() -> str | None:
            messages = [event["message"] for event in job_detail(job["id"])["events"]]
            # Until the scheduler has looked at it, a new job waits with no reason yet.
            return next((m for m in messages if "PENDING (Resources" in m), None)

        note = _wait_for("PENDING note", pending_note)
        assert str(note).endswith("is PENDING (Resources; 1st in the partition's queue)")
        subprocess.run(["scancel", blocker], check=True)
        out, err = launcher.communicate(timeout=90)
    finally:
        subprocess.run(["scancel", blocker], check=False)
        launcher.kill()
    assert launcher.returncode == 0, err[-3000:]
    assert "finally ran" in out


def test_cancel_mid_run_terms_the_workload_and_cancels_the_slurm_job(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        command: "trap 'echo workload got TERM; exit 0' TERM; echo started; sleep 120 & wait"
        budget: {max_hours: 1}
        """,
    )
    launcher = _launch(spec)
    try:
        job = _wait_for("job", _the_job)
        log = HomeLayout(Path(os.environ["GPUJOBS_HOME"])).log_file(job["id"])
        _wait_for("started", lambda: log.exists() and "started" in log.read_text())
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=90)
    finally:
        launcher.kill()
    job = json.loads(gpujobs_cli("status", "--json").stdout)[0]
    assert job["state"] == "CANCELLED", err[-3000:]
    assert "workload got TERM" in out, "scancel --signal=TERM --full reached the workload"
    assert queued(f"gpujobs-{job['id']}") == ""
    assert not (tmp_path / "shared fs" / "work" / job["id"]).exists()


def test_a_requeued_job_runs_again_and_its_second_run_is_the_one_that_counts(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    # Each run counts itself in the checkpoint folder (on the shared filesystem, as the
    # workload's checkpoints are); the first waits to be preempted, the second ends at once.
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        command: |
          n=$(cat ckpt/runs 2>/dev/null || echo 0); echo run $n; echo $((n + 1)) > ckpt/runs
          [ $n -ge 1 ] || { trap 'exit 143' TERM; sleep 120 & wait; }
        budget: {max_hours: 1}
        """,
    )
    launcher = _launch(spec)
    try:
        job = _wait_for("job", _the_job, launcher=launcher)
        log = HomeLayout(Path(os.environ["GPUJOBS_HOME"])).log_file(job["id"])
        _wait_for("run 0", lambda: log.exists() and "run 0" in log.read_text())
        batch_id = str(submitted(job_detail(job["id"])))
        subprocess.run(["scontrol", "requeue", batch_id], check=True)  # a preemption

        def requeued() -> bool:
            messages = [event["message"] for event in job_detail(job["id"])["events"]]
            return any("requeued" in message for message in messages)

        _wait_for("requeue note", requeued)
        # Slurm holds a requeued job back two minutes (BeginTime); the test lets it go now.
        subprocess.run(["scontrol", "update", f"JobId={batch_id}", "StartTime=now"], check=True)
        out, err = launcher.communicate(timeout=90)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, err[-3000:]
    assert "run 0" in out and "run 1" in out
    assert "DUE TO JOB REQUEUE" in out, "Slurm's own notice is in the streamed log"
    assert "slurm restarted job" in out


def test_two_nodes_through_srun_each_run_their_rank_on_their_node(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        nodes: 2
        command: >-
          echo "on $SLURMD_NODENAME: node $GPUJOBS_NODE_RANK of $GPUJOBS_NUM_NODES,
          head $GPUJOBS_HEAD_ADDR"
        budget: {max_hours: 1}
        """,
        name="pair",
    )
    done = gpujobs_cli("launch", str(spec), timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    # The head is the allocation's first node, at its NodeAddr; node K ran on the K-th node.
    assert "[node 0] on n1: node 0 of 2, head 127.0.0.1" in done.stdout, done.stdout
    assert "[node 1] on n2: node 1 of 2, head 127.0.0.1" in done.stdout, done.stdout
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert queued(f"gpujobs-{job['id']}") == ""
    assert not any((tmp_path / "shared fs" / "work").iterdir()), "both folders removed"


def test_mnist_trains_with_ddp_on_two_slurm_nodes(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        nodes: 2
        workload: mnist_cnn
        args: {synthetic: 400, epochs: 2, batch_size: 32, seed: 1, threads: 1}
        budget: {max_hours: 1}
        """,
        name="pair-mnist",
    )
    done = gpujobs_cli("launch", str(spec), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert "torchrun on 2 node(s) x 1 process(es), rendezvous at 127.0.0.1:" in done.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    runs = Path(job["runs_dir"])
    assert "distributed rank 1/2 (gloo)" in (runs / "job.node1.log").read_text()
    digests = [
        re.findall(r"finished at step \d+, weights sha256 (\w+)", (runs / name).read_text())
        for name in ("job.log", "job.node1.log")
    ]
    assert digests[0] and digests[0] == digests[1], "DDP kept the two nodes' weights identical"
    assert sorted(runs.glob("ckpt-*.pt")), "rank 0's checkpoints came home"


def test_down_after_the_client_died_stops_the_slurm_job_and_brings_its_checkpoint_home(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = slurm_spec(
        tmp_path,
        sshd,
        """
        command: "trap 'echo saved > ckpt/last.txt; exit 0' TERM; echo started; sleep 120 & wait"
        budget: {max_hours: 1}
        """,
    )
    launcher = _launch(spec)
    try:
        job = _wait_for("job", _the_job, launcher=launcher)
        log = HomeLayout(Path(os.environ["GPUJOBS_HOME"])).log_file(job["id"])
        _wait_for("started", lambda: log.exists() and "started" in log.read_text())
        launcher.kill()  # the laptop's client dies; the Slurm job runs on
        launcher.wait(timeout=30)
        assert queued(f"gpujobs-{job['id']}").endswith("RUNNING")
        down = gpujobs_cli("down", job["id"], timeout=200)
    finally:
        launcher.kill()
    assert down.returncode == 0, down.stderr[-3000:]
    runs = Path(job["runs_dir"])
    assert (runs / "last.txt").read_text() == "saved\n", "stopped through scancel, then pulled"
    assert queued(f"gpujobs-{job['id']}") == ""
    assert not (tmp_path / "shared fs" / "work" / job["id"]).exists()
