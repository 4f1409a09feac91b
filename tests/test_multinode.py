"""Multi-node jobs: two nodes reached through the ssh provider (two real sshd on loopback, each
node a folder of its own), started under torchrun with a static rendezvous, their logs streamed
with their rank, checkpoints from rank 0; and the commands and environment generated for 1, 2
and 4 nodes on every runtime and provider."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gpujobs.group import NodeGroup, rendezvous_port
from gpujobs.providers.base import Node
from gpujobs.runtime.base import job_environment
from gpujobs.runtime.docker import DEFAULT_IMAGE, DockerRuntime
from gpujobs.runtime.host import HostRuntime
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import parse_spec
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec


def group_of(count: int, gpus: int = 1, job: str = "j-1") -> NodeGroup:
    text = "name: g\nworkload: mnist_cnn\n" + (f"resources: {{gpu: T4, gpus: {gpus}}}\n")
    spec = parse_spec(text, label="s.yaml", base_dir=Path("."))
    nodes = [
        Node(provider="aws", job_id=job, node_id=f"i-{k}", rank=k, host=f"54.0.0.{k}",
             private_host=f"10.0.0.{k}", workdir="/w")
        for k in reversed(range(count))
    ]  # fmt: skip
    return NodeGroup.of(job, spec, nodes)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_every_node_gets_torchrun_and_the_group_environment(count: int) -> None:
    spec = parse_spec(
        "name: g\nworkload: mnist_cnn\nresources: {gpu: T4}\n", label="s.yaml", base_dir=Path(".")
    )
    group = group_of(count)
    layout = NodeLayout("/w")
    port = str(rendezvous_port("j-1"))
    assert group.head == "10.0.0.0", "the head is rank 0, reached at its private address"
    assert group.distributed is (count > 1)
    for rank in range(count):
        env = job_environment("j-1", spec, layout, group, rank)
        assert env["GPUJOBS_NODE_RANK"] == str(rank)
        assert env["GPUJOBS_NUM_NODES"] == str(count)
        assert env["GPUJOBS_HEAD_ADDR"] == "10.0.0.0" and env["GPUJOBS_HEAD_PORT"] == port
        assert env["GPUJOBS_NODE_ADDRS"] == ",".join(f"10.0.0.{k}" for k in range(count))
        assert env["GPUJOBS_GPUS_PER_NODE"] == "1"
        host = HostRuntime("python3").argv(spec, layout, group, rank)
        docker = DockerRuntime("j-1").argv(spec, layout, group, rank)
        if count == 1:
            assert host[:3] == ["python3", "-m", "jobs.mnist_cnn"]
            assert "torch.distributed.run" not in docker and "--network" not in docker
            continue
        torchrun = [
            "torch.distributed.run", "--nnodes", str(count), "--nproc-per-node", "1",
            "--node-rank", str(rank), "--master-addr", "10.0.0.0", "--master-port", port,
            "-m", "jobs.mnist_cnn",
        ]  # fmt: skip
        assert host[:2] == ["python3", "-m"] and host[2 : 2 + len(torchrun)] == torchrun
        assert "--resume" in host and "--out" in host
        image_at = docker.index(DEFAULT_IMAGE)
        assert docker[image_at + 1 : image_at + 1 + len(torchrun)] == torchrun
        assert docker[docker.index("--network") + 1] == "host"
        assert "GPUJOBS_NODE_RANK" in docker and "GPUJOBS_HEAD_ADDR" in docker


def test_one_node_with_four_gpus_runs_four_processes_under_torchrun() -> None:
    group = group_of(1, gpus=4)
    assert group.distributed and group.torchrun(0)[1:5] == [
        "--nnodes",
        "1",
        "--nproc-per-node",
        "4",
    ]


# -- two nodes over ssh ---------------------------------------------------------------------------
@pytest.fixture
def second_sshd(
    sshd: LoopbackSshd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoopbackSshd]:
    """Another machine: a second sshd that lets in the first one's client key."""
    with LoopbackSshd(tmp_path_factory.mktemp("sshd-2")) as other:
        public = Path(f"{sshd.client_key}.pub").read_text()
        with (other.folder / "authorized_keys").open("a") as handle:
            handle.write(public)
        yield other


def two_node_spec(folder: Path, sshd: LoopbackSshd, other: LoopbackSshd, body: str) -> Path:
    return write_spec(
        folder,
        textwrap.dedent(f"""
        name: pair
        nodes: 2
        providers: [ssh]
        runtime: host
        ssh:
          hosts: ["{sshd.target}", "{other.target}"]
          identity_file: {sshd.client_key}
          workdir: {folder / "lab"}
        checkpoints: {{every_minutes: 0.01, keep: 2}}
        """)
        + body,
    )


COMMAND = (
    'echo "node $GPUJOBS_NODE_RANK of $GPUJOBS_NUM_NODES, head $GPUJOBS_HEAD_ADDR:'
    '$GPUJOBS_HEAD_PORT, all $GPUJOBS_NODE_ADDRS"; '
    'if [ "$GPUJOBS_NODE_RANK" = 0 ]; then echo saved > "$GPUJOBS_CKPT_DIR/ckpt.txt"; fi; '
    "echo finished"
)


def test_two_nodes_over_ssh_get_their_rank_and_stream_their_logs(
    sshd: LoopbackSshd, second_sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = two_node_spec(tmp_path, sshd, second_sshd, f"command: '{COMMAND}'\n")
    done = gpujobs_cli("launch", str(spec), timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    port = rendezvous_port(job["id"])
    for rank in (0, 1):
        said = f"[node {rank}] node {rank} of 2, head 127.0.0.1:{port}, all 127.0.0.1,127.0.0.1"
        assert said in done.stdout, done.stdout
        assert f"[node {rank}] finished" in done.stdout
    runs = Path(job["runs_dir"])
    assert (runs / "ckpt.txt").read_text() == "saved\n", "checkpoints come home from rank 0"
    assert "node 1 of 2" in (runs / "job.node1.log").read_text()
    only_one = gpujobs_cli("logs", job["id"], "--node", "1")
    assert only_one.returncode == 0 and "node 1 of 2" in only_one.stdout
    assert "node 0 of 2" not in only_one.stdout
    nodes = json.loads(gpujobs_cli("status", "--json", job["id"]).stdout)["nodes"]
    assert sorted(node["node_id"] for node in nodes) == [f"{job['id']}-0", f"{job['id']}-1"]
    assert not (tmp_path / "lab" / "work" / job["id"]).exists()
    assert not (tmp_path / "lab" / "work" / f"{job['id']}-node1").exists()


MNIST = (
    "workload: mnist_cnn\nargs: {synthetic: 400, epochs: 2, batch_size: 32, seed: 1, threads: 1}\n"
)


def test_mnist_trains_with_ddp_over_gloo_on_two_nodes(
    sshd: LoopbackSshd, second_sshd: LoopbackSshd, tmp_path: Path
) -> None:
    spec = two_node_spec(tmp_path, sshd, second_sshd, MNIST)
    done = gpujobs_cli("launch", str(spec), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert "torchrun on 2 node(s) x 1 process(es)" in done.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    runs = Path(job["runs_dir"])
    for rank in (0, 1):
        assert f"[node {rank}] " in done.stdout
    assert "distributed rank 1/2 (gloo)" in (runs / "job.node1.log").read_text()
    # Each rank prints a digest of its final weights: DDP kept them identical.
    digests = [
        re.findall(r"finished at step \d+, weights sha256 (\w+)", (runs / name).read_text())
        for name in ("job.log", "job.node1.log")
    ]
    assert digests[0] and digests[0] == digests[1], digests
    checkpoints = sorted(runs.glob("ckpt-*.pt"))
    assert checkpoints, "rank 0's checkpoints came home"
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    assert state["epoch"] >= 1


def test_a_node_killed_mid_run_fails_the_job_and_stops_the_other(
    sshd: LoopbackSshd, second_sshd: LoopbackSshd, tmp_path: Path
) -> None:
    command = (
        'i=0; while [ $i -lt 600 ]; do echo "tick $i"; '
        'if [ "$GPUJOBS_NODE_RANK" = 0 ]; then echo $i > "$GPUJOBS_CKPT_DIR/ckpt.txt"; fi; '
        "i=$((i+1)); sleep 0.05; done"
    )
    spec = two_node_spec(tmp_path, sshd, second_sshd, f"command: '{command}'\n")
    launched = gpujobs_cli("launch", "--detach", str(spec))
    job_id = launched.stdout.strip()
    node1 = tmp_path / "lab" / "work" / f"{job_id}-node1"
    runs = tmp_path / "runs" / job_id
    deadline = time.monotonic() + 60
    while not ((node1 / "pid").exists() and (runs / "ckpt.txt").exists()):
        assert time.monotonic() < deadline, "the job did not start on both nodes"
        time.sleep(0.1)
    os.killpg(int((node1 / "pid").read_text()), signal.SIGKILL)  # node 1 dies
    while json.loads(gpujobs_cli("status", "--json", job_id).stdout)["state"] not in (
        "FAILED", "SUCCEEDED", "CANCELLED",
    ):  # fmt: skip
        assert time.monotonic() < deadline + 60, "the job did not end"
        time.sleep(0.2)
    shown = json.loads(gpujobs_cli("status", "--json", job_id).stdout)
    assert shown["state"] == "FAILED" and "node 1" in shown["error"], shown["error"]
    assert int((runs / "ckpt.txt").read_text()) > 0, "the checkpoint home stays home"
    assert not (tmp_path / "lab" / "work" / job_id).exists(), "node 0 is stopped and cleaned"
    assert not node1.exists()


def test_the_nodes_of_a_group_are_set_up_at_once(home, store, tmp_path: Path) -> None:
    """Two nodes are set up concurrently: each node's first setup command (making its folders)
    takes half a second, and the two nodes' half seconds overlap; the job then runs as before."""
    from gpujobs.api.controller import Controller
    from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
    from gpujobs.providers.local import LocalProvider
    from gpujobs.remote.transport import LocalTransport
    from gpujobs.state import JobState
    from tests.test_lifecycle import Recorder

    class TwoLocalNodes(LocalProvider):
        """This machine as two nodes, a work folder each."""

        def offers(self, resources):
            return [o.model_copy(update={"max_nodes": 2}) for o in super().offers(resources)]

        def provision(self, job_id, offer, ssh_public_key, nodes, *, restart=0):
            made = []
            for rank in range(nodes):
                workdir = self.work_root / (job_id if rank == 0 else f"{job_id}-node{rank}")
                workdir.mkdir(parents=True, exist_ok=True)
                made.append(
                    Node(provider=self.name, job_id=job_id, node_id=f"{job_id}-{rank}",
                         rank=rank, host="localhost", workdir=str(workdir), transport="local",
                         runtime="host")
                )  # fmt: skip
            return made

    making_folders: dict[int, tuple[float, float]] = {}  # rank -> (start, end), monotonic

    class SlowFolders(LocalTransport):
        def __init__(self, rank: int) -> None:
            self.rank = rank

        def make_dirs(self, paths, *, private=False):
            if self.rank in making_folders:
                return super().make_dirs(paths, private=private)
            start = time.monotonic()
            time.sleep(0.5)
            super().make_dirs(paths, private=private)
            making_folders[self.rank] = (start, time.monotonic())
            return None

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("hello\n")
    command = 'cat "$GPUJOBS_DATA_DIR/a.txt"; echo "rank $GPUJOBS_NODE_RANK"'
    spec = parse_spec(
        f"name: pair\nnodes: 2\nruntime: host\ndataset: {{source: data}}\ncommand: '{command}'\n",
        label="spec.yaml",
        base_dir=tmp_path,
    )
    controller = Controller(
        home,
        store,
        lambda: {"local": TwoLocalNodes(home.work)},
        config=LifecycleConfig(poll_interval_s=0.05, stop_grace_s=10),
        connect=lambda node: SlowFolders(node.rank),
    )
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    sink = Recorder()
    final = controller.drive(record.id, spec, lock, CancelToken(), sink)
    assert final.state is JobState.SUCCEEDED, final.error
    (start0, end0), (start1, end1) = making_folders[0], making_folders[1]
    assert max(start0, start1) < min(end0, end1), f"one after the other: {making_folders}"
    for rank in (0, 1):
        assert f"[node {rank}] hello\n[node {rank}] rank {rank}\n".encode() in sink.logs
        assert any(note.startswith(f"dataset to node {rank}: 1 files") for note in sink.notes)
    assert all(node.terminated_at is not None for node in store.nodes(record.id))
    assert not any(home.work.iterdir()), "both nodes' folders are removed"
