"""`launch` through the AWS provider on moto, the node's SSH endpoint pointed at the loopback sshd.

The node's part is played for real: its user data (the bootstrap script AWS would run) runs on
the "node" with stubs for the commands only a real VM has (shutdown, docker, usermod), the job
key gpujobs made is what opens the sshd, and everything after provisioning (setup, sync, run,
checkpoints, teardown) is the real lifecycle. Faults are injected at boto3's API boundary.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from moto import mock_aws

from gpujobs.api.controller import Controller
from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
from gpujobs.paths import HomeLayout
from gpujobs.providers.aws import AwsProvider
from gpujobs.providers.base import TAG_KEY, Node
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.providers.local import job_pid
from gpujobs.remote.connect import connect_node
from gpujobs.remote.transport import Transport
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.state import JobRecord, JobState, Store
from gpujobs.testing.aws import (
    AUTH_FAILURE,
    NO_CAPACITY,
    THROTTLED,
    VCPU_LIMIT,
    AwsFakes,
    reclaim_spot_instance,
    tagged_leftovers,
)
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import write_stubs

REGIONS = ["us-east-1", "us-west-2"]
CALLER = "198.51.100.23"
FAST = LifecycleConfig(poll_interval_s=0.05, stop_grace_s=10, bootstrap_poll_s=0.1)
STUBS = {
    # What only a real VM has: each stub records how it was called.
    "shutdown": 'echo "shutdown $*" >> "$STUB_LOG"',
    "systemd-run": 'echo "systemd-run $*" >> "$STUB_LOG"',
    "docker": 'echo "docker $*" >> "$STUB_LOG"',
    "usermod": 'echo "usermod $*" >> "$STUB_LOG"',
}


class FakeNodes:
    """Plays the cloud's machines: runs each instance's user data once, then connects to the
    loopback sshd instead of the instance's (moto-made) address."""

    def __init__(self, sshd: LoopbackSshd, home: HomeLayout, fakes: AwsFakes, root: Path) -> None:
        self.sshd, self.home, self.fakes, self.root = sshd, home, fakes, root
        self.booted: set[str] = set()
        self.stubs = root.parent / "stubs"
        self.stub_log = root.parent / "stub.log"
        write_stubs(self.stubs, STUBS)

    def connect(self, node: Node) -> Transport:
        if node.node_id not in self.booted:
            self.booted.add(node.node_id)
            self._boot(node)
        public = (self.home.job_key_dir(node.job_id) / "id_ed25519.pub").read_text()
        keys = self.sshd.folder / "authorized_keys"
        if public not in keys.read_text():
            with keys.open("a") as handle:
                handle.write(public)
        local = node.model_copy(
            update={"host": self.sshd.host, "port": self.sshd.port, "user": self.sshd.user}
        )
        return connect_node(local, self.home)

    def wipe(self, node: Node) -> None:
        """The machine is gone: its processes die at once and its disk with them."""
        workdir = Path(node.workdir)
        pid = job_pid(workdir)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)

    def _boot(self, node: Node) -> None:
        ec2 = self.fakes.session().client("ec2", region_name=node.region)
        answer = ec2.describe_instance_attribute(InstanceId=node.node_id, Attribute="userData")
        script = base64.b64decode(answer["UserData"]["Value"]).decode()
        env = {
            "PATH": f"{self.stubs}:/usr/bin:/bin:/usr/sbin:/sbin",
            "STUB_LOG": str(self.stub_log),
        }
        subprocess.run(["bash", "-c", script], env=env, check=True, timeout=60)


@pytest.fixture
def fakes() -> Iterator[AwsFakes]:
    with mock_aws():
        # On-demand and spot G/VT vCPUs.
        quotas = {(region, code): 64 for region in REGIONS for code in ("L-DB2E81BA", "L-3819A6DF")}
        yield AwsFakes(applied_quotas=quotas)


@pytest.fixture
def world(sshd: LoopbackSshd, home: HomeLayout, store: Store, fakes: AwsFakes, tmp_path: Path):
    root = tmp_path / "node" / "opt gpujobs"
    nodes = FakeNodes(sshd, home, fakes, root)
    aws = AwsProvider(
        session_factory=fakes.session,
        caller_address=lambda: CALLER,
        settings=CloudNodeSettings(ssh_user=sshd.user, root=str(root)),
    )
    controller = Controller(home, store, lambda: {"aws": aws}, config=FAST, connect=nodes.connect)
    return controller, nodes


def spec_for(tmp_path: Path, body: str) -> JobSpec:
    text = f"providers: [aws]\nregions: [{', '.join(REGIONS)}]\nresources: {{gpu: T4}}\n{body}"
    return parse_spec(text, label="spec.yaml", base_dir=tmp_path)


def quick_spec(tmp_path: Path) -> JobSpec:
    return spec_for(
        tmp_path,
        "name: quick\nruntime: host\nbudget: {max_hours: 1}\n"
        "command: 'echo trained > \"$GPUJOBS_CKPT_DIR/ckpt-1.txt\"; echo done'\n",
    )


def launch(controller: Controller, spec: JobSpec, tmp_path: Path) -> JobRecord:
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    return controller.drive(record.id, spec, lock, CancelToken(), _Quiet())


class _Quiet:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def state(self, job_id: str, state: JobState, message: str) -> None: ...
    def log(self, data: bytes) -> None: ...
    def note(self, message: str) -> None:
        self.notes.append(message)

    def progress(self, label: str, done: int, total: int) -> None: ...


def assert_nothing_left(fakes: AwsFakes, home: HomeLayout, job: JobRecord) -> None:
    assert tagged_leftovers(fakes.session(), REGIONS, TAG_KEY) == []
    assert not home.job_key_dir(job.id).exists(), "the job's key is deleted after teardown"


def test_mnist_trains_on_aws_and_nothing_tagged_remains(world, fakes, home, tmp_path) -> None:
    controller, nodes = world
    spec = spec_for(
        tmp_path,
        "name: mnist-aws\nworkload: mnist_cnn\nruntime: host\n"
        "args: {synthetic: 400, epochs: 2, batch_size: 32, seed: 1}\n"
        "budget: {max_hours: 2, max_usd: 5}\ncheckpoints: {every_minutes: 1, keep: 2}\n",
    )
    job = launch(controller, spec, tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.placement == "aws/us-east-1/g4dn.xlarge", "the cheapest T4 placement"
    checkpoints = sorted(Path(job.runs_dir).glob("ckpt-*.pt"))
    assert checkpoints, "checkpoints came home"
    assert torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["epoch"] >= 1
    assert "epoch 2/2" in (Path(job.runs_dir) / "job.log").read_text()
    assert_nothing_left(fakes, home, job)
    stubbed = nodes.stub_log.read_text()
    assert "shutdown -h +121" in stubbed, "the node's own budget timer: max_hours + 1 minute"
    assert f"usermod -aG docker {nodes.sshd.user}" in stubbed
    assert (nodes.root / "bootstrap.done").exists()


def test_throttling_is_retried_and_the_job_succeeds(world, fakes, home, tmp_path) -> None:
    controller, _ = world
    fakes.fail("RunInstances", THROTTLED, times=2)
    fakes.fail("DescribeInstances", THROTTLED, times=1)
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert fakes.called("RunInstances") == 3
    assert_nothing_left(fakes, home, job)


def test_no_capacity_in_the_first_region_moves_to_the_next(world, fakes, home, tmp_path) -> None:
    controller, _ = world
    fakes.fail("RunInstances", NO_CAPACITY, times=-1, region="us-east-1")
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.placement == "aws/us-west-2/g4dn.xlarge"
    assert (Path(job.runs_dir) / "ckpt-1.txt").read_text() == "trained\n"
    assert_nothing_left(fakes, home, job)
    notes = " ".join(event.message for event in controller.store.events(job.id))
    assert "InsufficientInstanceCapacity" in notes and "trying the next placement" in notes


def test_a_region_without_quota_is_skipped_with_its_reason(world, fakes, home, tmp_path) -> None:
    controller, _ = world
    fakes.applied_quotas[("us-east-1", "L-DB2E81BA")] = 0
    plan = controller.plan(quick_spec(tmp_path))
    [skipped] = [r for r in plan.rejected if r.what == "aws/us-east-1/g4dn.xlarge"]
    assert "L-DB2E81BA" in skipped.reason and "request at least 4" in skipped.reason
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.placement == "aws/us-west-2/g4dn.xlarge"
    assert fakes.called("RunInstances", "us-east-1") == 0, "no attempt where there is no quota"
    assert_nothing_left(fakes, home, job)


def test_quota_refused_at_launch_fails_over_and_every_try_is_listed(
    world, fakes, home, tmp_path
) -> None:
    controller, _ = world
    fakes.fail("RunInstances", VCPU_LIMIT, times=-1)
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.FAILED
    assert "every placement failed" in job.error
    for label in ("aws/us-east-1/g4dn.xlarge", "aws/us-west-2/g4dn.xlarge"):
        assert label in job.error
    assert "VcpuLimitExceeded" in job.error and "servicequotas" in job.error
    assert_nothing_left(fakes, home, job)


def test_refused_credentials_stop_at_once(world, fakes, home, tmp_path) -> None:
    controller, _ = world
    fakes.fail("ImportKeyPair", AUTH_FAILURE, times=-1)
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.FAILED
    assert "AuthFailure" in job.error and "aws configure" in job.error
    assert fakes.called("ImportKeyPair") == 1, "no other placement is tried"
    assert_nothing_left(fakes, home, job)


def test_an_error_mid_provisioning_leaves_nothing(world, fakes, home, tmp_path) -> None:
    controller, _ = world
    fakes.fail("CreateSecurityGroup", ("InvalidParameterValue", "bad group"), times=-1)
    job = launch(controller, quick_spec(tmp_path), tmp_path)
    assert job.state is JobState.FAILED and "bad group" in job.error
    assert fakes.called("DeleteKeyPair") >= 1, "the key pair made before the error is removed"
    assert_nothing_left(fakes, home, job)


def test_a_budget_sets_the_nodes_own_timer_and_the_ledger_freezes_the_price(
    world, fakes, home, store, tmp_path
) -> None:
    """No max_hours in the spec: $0.263 left of the user's budget at $0.526/h is half an hour,
    and that is what the node's shutdown timer is set to (30 min + 1), so a lost laptop cannot
    overspend. The ledger keeps the catalog's price of the day."""
    controller, nodes = world
    store.set_budget(provider="aws", monthly=True, limit_usd=0.263)
    spec = spec_for(
        tmp_path,
        "name: capped\nruntime: host\n"
        "command: 'echo trained > \"$GPUJOBS_CKPT_DIR/ckpt-1.txt\"; echo done'\n",
    )
    job = launch(controller, spec, tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.cap_hours == pytest.approx(0.5) and job.cap_usd == pytest.approx(0.263)
    assert "shutdown -h +31" in nodes.stub_log.read_text()
    [entry] = store.ledger(job.id)
    where = (entry.provider, entry.instance_type, entry.region)
    assert where == ("aws", "g4dn.xlarge", "us-east-1")
    assert entry.price_per_hour == 0.526 and entry.ended_at is not None and not entry.spot
    assert_nothing_left(fakes, home, job)


def metric_rows(runs: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]


def last_validation(runs: Path) -> dict[str, float]:
    last = [row for row in metric_rows(runs) if row["split"] == "val"][-1]
    return {key: last[key] for key in ("epoch", "step", "loss", "accuracy")}


def final_weights(runs: Path) -> dict[str, torch.Tensor]:
    newest = sorted(runs.glob("ckpt-*.pt"))[-1]
    return torch.load(newest, map_location="cpu", weights_only=False)["models"]["model"]


def test_a_reclaimed_spot_instance_resumes_elsewhere_to_the_same_final_metrics(
    world, fakes, home, store, tmp_path
) -> None:
    """AWS takes the spot instance back mid-run (terminated, Server.SpotInstanceTermination,
    and the machine is gone with everything on it). The driver sees it from AWS, replaces it
    and the workload resumes from the checkpoint that came home: it ends where an uninterrupted
    run of the same seed ends, to the last weight."""
    controller, nodes = world
    body = (
        "workload: mnist_cnn\nruntime: host\nspot: true\n"
        "args: {synthetic: 2000, epochs: 6, batch_size: 32, seed: 3}\n"
        "budget: {max_hours: 2, max_usd: 5}\ncheckpoints: {every_minutes: 0.01, keep: 2}\n"
    )
    straight = launch(controller, spec_for(tmp_path, f"name: straight\n{body}"), tmp_path)
    assert straight.state is JobState.SUCCEEDED, straight.error
    assert straight.restarts == 0

    taken: list[Node] = []

    def reclaim_once_a_checkpoint_is_home() -> None:
        while not taken:
            jobs = [job for job in store.jobs() if job.name == "preempted"]
            if jobs and jobs[0].state.is_terminal:
                return
            if (
                jobs
                and jobs[0].state is JobState.RUNNING
                and any(Path(jobs[0].runs_dir).glob("ckpt-*.pt"))
            ):
                [row] = [r for r in store.nodes(jobs[0].id) if r.terminated_at is None]
                node = Node.model_validate_json(row.node_json)
                reclaim_spot_instance(node.region, node.node_id)
                nodes.wipe(node)  # the machine and everything on it are gone
                taken.append(node)
            time.sleep(0.02)

    reclaimer = threading.Thread(target=reclaim_once_a_checkpoint_is_home, daemon=True)
    reclaimer.start()
    job = launch(controller, spec_for(tmp_path, f"name: preempted\n{body}"), tmp_path)
    reclaimer.join(timeout=30)
    assert taken, "the instance was reclaimed while the job ran"
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.restarts == 1
    recovering = [e for e in store.events(job.id) if e.state is JobState.RECOVERING]
    assert "Server.SpotInstanceTermination" in recovering[0].message
    log = (Path(job.runs_dir) / "job.log").read_text()
    # It went on from a checkpoint, not from scratch (which ends the same, seeded).
    assert re.search(r"resume: .+/ckpt-\d+\.pt \(epoch \d", log), log[-2000:]
    assert "epoch 6/6" in log
    assert last_validation(Path(job.runs_dir)) == last_validation(Path(straight.runs_dir))
    logged = [(row["split"], row["step"]) for row in metric_rows(Path(job.runs_dir))]
    assert len(logged) == len(set(logged)), "no row twice: the resume dropped what it redid"
    resumed = final_weights(Path(job.runs_dir))
    uninterrupted = final_weights(Path(straight.runs_dir))
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)

    ledger = store.ledger(job.id)
    assert len(ledger) == 2 and all(entry.spot and entry.ended_at for entry in ledger)
    assert ledger[0].node_id == taken[0].node_id != ledger[1].node_id
    assert_nothing_left(fakes, home, job)


def test_the_default_cloud_path_runs_the_workload_image_on_a_real_engine(
    world, fakes, home, tmp_path, docker_engine, offline_build
) -> None:
    """`runtime: auto` on a cloud is docker: the node (its user data installs nothing, docker
    is there) builds the workload image from what gpujobs sends, and the container trains."""
    controller, _nodes = world
    spec = spec_for(
        tmp_path,
        "name: mnist-image\nworkload: mnist_cnn\n"
        "args: {synthetic: 64, epochs: 1, batch_size: 16, seed: 1, threads: 1}\n"
        "budget: {max_hours: 1}\ncheckpoints: {every_minutes: 1, keep: 1}\n",
    )
    job = launch(controller, spec, tmp_path)
    assert job.state is JobState.SUCCEEDED, job.error
    assert "epoch 1/1" in (Path(job.runs_dir) / "job.log").read_text()
    notes = [event.message for event in controller.store.events(job.id)]
    assert any("preparing the docker runtime" in note for note in notes), notes
    assert sorted(Path(job.runs_dir).glob("ckpt-*.pt")), "checkpoints came home"
    listed = docker_engine.docker("ps", "-aq", "--filter", f"label=gpujobs-job={job.id}")
    assert listed.stdout.split() == []
    assert docker_engine.docker("image", "inspect", offline_build, check=False).returncode == 0
    assert_nothing_left(fakes, home, job)
