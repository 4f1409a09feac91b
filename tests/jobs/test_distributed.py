"""The classifiers under torchrun on this machine's CPUs (gloo, loopback only): two processes
of one torchrun, and two torchruns as two "nodes" with their own --out (mnist_cnn), and exact
resume of a group (mnist_cnn, text_classifier, transfer).

Every rank prints ``rank R/W finished at step S, weights sha256 H`` at the end; equal digests
mean bit-equal weights, which is how these tests see the ranks' final models."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.common.checkpoint import (
    WEIGHTS_FILE,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from jobs.common.distributed import (
    Group,
    join_group,
    single_process_only,
    state_digest,
    torchrun_env,
)
from jobs.common.errors import UsageError
from jobs.common.metrics import read_metrics
from jobs.mnist_cnn.cli import main
from jobs.mnist_cnn.data import epoch_order

REPO_ROOT = Path(__file__).resolve().parents[2]
# 400 digits -> 360 train / 40 val -> 180 per rank -> 6 steps of 32 per epoch on each rank.
TRAIN = ["--synthetic", "400", "--batch-size", "32", "--seed", "1", "--threads", "1"]
STEPS = 12  # 2 epochs x 6
VAL_COUNT = 40
FINISHED = re.compile(r"rank (\d+)/(\d+) finished at step (\d+), weights sha256 ([0-9a-f]+)")
STARTED = re.compile(r"distributed rank (\d+)/(\d+) \(gloo\).*? pid (\d+)")  # one write each


@dataclass
class Run:
    output: str
    returncode: int

    def finished(self) -> dict[int, tuple[int, str]]:
        """rank -> (step, weights digest)"""
        return {int(m[1]): (int(m[3]), m[4]) for m in FINISHED.finditer(self.output) if m[2] == "2"}

    def pids(self) -> dict[int, int]:
        return {int(m[1]): int(m[3]) for m in STARTED.finditer(self.output)}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections stay on loopback
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(
    launch: Sequence[str],
    data: Path,
    out: Path,
    *args: str,
    module: str = "jobs.mnist_cnn",
    train: Sequence[str] = TRAIN,
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        "-m",
        module,
        "--data",
        str(data),
        "--out",
        str(out),
        *train,
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(procs: Sequence[subprocess.Popen[str]], timeout: float = 90) -> list[Run]:
    runs = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        runs.append(Run(output, proc.returncode))
    return runs


ONE_NODE = ["--standalone", "--nnodes", "1", "--nproc-per-node", "2"]


def _one_node(tmp: Path, out: Path, *args: str, **workload: Any) -> Run:
    return _wait([_torchrun(ONE_NODE, tmp / "data", out, *args, **workload)])[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_nodes(tmp: Path, outs: Sequence[Path], *args: str, static: bool = False) -> list[Run]:
    """Two torchruns of one process each, as on two machines: each has its own --out."""
    port = _free_port()
    procs = []
    for node, out in enumerate(outs):
        if static:
            # Static rendezvous honours --node-rank: node 0 is rank 0 on every run.
            rdzv = ["--rdzv-backend", "static", "--master-addr", "127.0.0.1"]
            rdzv += ["--master-port", str(port)]
        else:
            rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
            rdzv += ["--local-addr", "127.0.0.1"]
        launch = ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node), *rdzv]
        procs.append(_torchrun(launch, tmp / "data", out, *args))
    return _wait(procs)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    path = latest_checkpoint(out)
    assert path is not None, f"no checkpoint in {out}"
    return load_checkpoint(path)["models"]["model"]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """One uninterrupted two-process run of 2 epochs: the reference for the others."""
    tmp = tmp_path_factory.mktemp("unbroken")
    run = _one_node(tmp, tmp / "out", "--epochs", "2", "--log-every", "2")
    assert run.returncode == 0, run.output
    return tmp / "out", run


def test_two_processes_train_one_model(unbroken: tuple[Path, Run]) -> None:
    out, run = unbroken
    finished = run.finished()
    assert sorted(finished) == [0, 1], run.output
    assert finished[0] == finished[1] and finished[0][0] == STEPS
    assert "mnist_cnn: distributed rank 0/2 (gloo)" in run.output
    assert finished[0][1] == state_digest(_weights(out))
    # Rank 0 alone logs and saves: one row per (step, split), the group's numbers.
    rows = read_metrics(out)
    keys = [(row["step"], row["split"]) for row in rows]
    assert len(keys) == len(set(keys))
    assert [row["step"] for row in rows if row["split"] == "val"] == [6, 12]
    assert [row["step"] for row in rows if row["split"] == "train_step"] == [2, 4, 6, 8, 10, 12]
    assert run.output.count("epoch 2/2: train loss") == 1
    assert run.output.count("done: val accuracy") == 1
    assert [step for step, _ in list_checkpoints(out)] == [6, 12]
    state = load_checkpoint(out / "ckpt-00000012.pt")
    assert state["extra"]["world_size"] == 2
    assert not any(name.startswith("module.") for name in state["models"]["model"])
    # Rank 0 validated the whole split: the confusion matrix counts every sample once.
    report = json.loads((out / "per_class.json").read_text())
    assert sum(map(sum, report["confusion"])) == VAL_COUNT and report["epoch"] == 2
    weights = torch.load(out / WEIGHTS_FILE, weights_only=True)
    assert weights.keys() == state["models"]["model"].keys()


def test_two_nodes_each_with_its_own_out(tmp_path: Path, unbroken: tuple[Path, Run]) -> None:
    outs = [tmp_path / "node0", tmp_path / "node1"]
    runs = _two_nodes(tmp_path, outs, "--epochs", "2")
    assert [run.returncode for run in runs] == [0, 0], runs[0].output + runs[1].output
    finished = {**runs[0].finished(), **runs[1].finished()}
    # c10d rendezvous ignores --node-rank: which node holds rank 0 is its choice.
    main_node = 0 if 0 in runs[0].finished() else 1
    assert finished[0] == finished[1] == unbroken[1].finished()[0]
    assert latest_checkpoint(outs[main_node]) is not None
    assert not outs[1 - main_node].exists()  # nothing written on the other machine


def test_a_stopped_group_resumes_from_rank_0s_checkpoint(
    tmp_path: Path, unbroken: tuple[Path, Run]
) -> None:
    outs = [tmp_path / "node0", tmp_path / "node1"]
    # --max-steps 4 stops mid-epoch 1 (of 6 steps), with a checkpoint on rank 0 only.
    first = _two_nodes(tmp_path, outs, "--epochs", "2", "--max-steps", "4", static=True)
    assert [run.returncode for run in first] == [0, 0], first[0].output + first[1].output
    assert first[0].finished()[0][0] == first[1].finished()[1][0] == 4
    assert [step for step, _ in list_checkpoints(outs[0])] == [4]
    assert not outs[1].exists()
    # A stale --out on the other machine (a newer-looking, unreadable file) plays no part.
    outs[1].mkdir()
    (outs[1] / "ckpt-00000099.pt").write_bytes(b"stale")
    second = _two_nodes(tmp_path, outs, "--epochs", "2", "--resume", static=True)
    assert [run.returncode for run in second] == [0, 0], second[0].output + second[1].output
    assert "resume: " in second[1].output  # rank 1 resumed from what rank 0 sent
    assert second[0].finished()[0] == second[1].finished()[1] == unbroken[1].finished()[0]
    reference = _weights(unbroken[0])
    for name, tensor in _weights(outs[0]).items():
        assert torch.equal(tensor, reference[name]), name  # bit-equal, not just close
    assert [path.name for path in outs[1].iterdir()] == ["ckpt-00000099.pt"]


def test_sigterm_on_one_rank_stops_the_group_at_one_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _torchrun(ONE_NODE, tmp_path / "data", out, "--epochs", "500", "--log-every", "0")
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            # Both ranks write to one pipe, so a line may hold pieces of two: search it all.
            if "epoch 1/500" in line:  # training is under way on both ranks
                os.kill(Run("".join(lines), 0).pids()[1], signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = Run("".join(lines) + rest, proc.returncode)
    assert run.returncode == 0, run.output
    finished = run.finished()
    assert finished[0][0] == finished[1][0] < 500 * 6, run.output
    assert finished[0][1] == finished[1][1]
    assert "stopped by a signal on another rank" in run.output
    assert list_checkpoints(out)[-1][0] == finished[0][0]


# Dropout on, so each rank's own RNG stream must come back on resume (else rank 1 would take
# rank 0's and draw other masks than in the unbroken run).
TEXT = ["--synthetic", "300", "--seed", "3", "--log-every", "0", "--max-len", "32"]
TEXT += ["--hidden", "16", "--batch-size", "32", "--dropout", "0.3", "--threads", "1"]
# Crosses the frozen -> finetune stage change, where DDP wraps the model anew.
TRANSFER = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--seed", "3"]
TRANSFER += ["--synthetic", "60", "--frozen-epochs", "1", "--augment", "--threads", "1"]


@pytest.mark.parametrize(
    ("module", "train", "stop_at", "steps"),
    [("jobs.text_classifier", TEXT, 3, 8), ("jobs.transfer", TRANSFER, 2, 6)],
    ids=["text_classifier", "transfer"],
)
def test_other_classifiers_resume_a_group_exactly(
    tmp_path: Path, module: str, train: list[str], stop_at: int, steps: int
) -> None:
    workload: dict[str, Any] = {"module": module, "train": [*train, "--epochs", "2"]}
    # The unbroken run and the first leg side by side (each with its own generated data).
    runs = _wait(
        [
            _torchrun(ONE_NODE, tmp_path / "data-a", tmp_path / "a", **workload),
            _torchrun(
                ONE_NODE, tmp_path / "data", tmp_path / "b", "--max-steps", str(stop_at), **workload
            ),
        ]
    )
    runs.append(_one_node(tmp_path, tmp_path / "b", "--resume", **workload))
    assert [run.returncode for run in runs] == [0, 0, 0], "".join(run.output for run in runs)
    unbroken, first, resumed = (run.finished() for run in runs)
    assert first[0] == first[1] and first[0][0] == stop_at
    assert unbroken[0] == unbroken[1] == resumed[0] == resumed[1]
    assert unbroken[0][0] == steps
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(tensor, b[name]) for name, tensor in a.items())


def test_rank_0s_refusal_is_every_ranks_one_line_error(
    tmp_path: Path, unbroken: tuple[Path, Run]
) -> None:
    """--out holds checkpoints but no --resume: rank 0 refuses, and rank 1 hears it at once
    rather than waiting for a broadcast that never comes."""
    run = _one_node(tmp_path, unbroken[0], "--epochs", "2")
    assert run.returncode != 0
    assert run.output.count(f"error: --out {unbroken[0]} already holds checkpoints") == 2


def test_a_single_process_refuses_a_two_process_checkpoint(
    tmp_path: Path, unbroken: tuple[Path, Run], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(unbroken[0], out)
    args = ["--data", str(tmp_path), "--out", str(out), *TRAIN, "--epochs", "3", "--resume"]
    assert main(args) == 2
    assert "written by 2 training process(es) and this run has 1" in capsys.readouterr().err


def test_torchrun_env() -> None:
    assert torchrun_env({}) is None
    env = torchrun_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "4",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500",
        }
    )
    assert env is not None
    assert (env.rank, env.world_size, env.local_rank, env.endpoint) == (3, 4, 1, "10.0.0.1:29500")


def test_a_workload_without_ddp_refuses_a_group() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(UsageError, match="dcgan does not train distributed yet"):
        single_process_only("dcgan", env)
    single_process_only("dcgan", {**env, "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    single_process_only("dcgan", {})


def test_a_plain_run_is_a_group_of_one() -> None:
    with join_group(torch.device("cpu"), environ={}) as group:
        assert (group.active, group.rank, group.world_size, group.is_main) == (
            False,
            0,
            1,
            True,
        )
        order = torch.arange(5)
        assert group.shard(order) is order
        assert group.any_of(True, False) == (True, False)
        assert group.from_main(lambda: 7) == 7
        assert group.checkpoint_extra() == {}


def test_shards_cover_the_single_process_order_like_distributed_sampler() -> None:
    """The ranks' shards of epoch_order are DistributedSampler's with the same seeded shuffle:
    together the group sees the order one process would (padded to equal shares)."""
    from torch.utils.data import DistributedSampler

    from jobs.common.distributed import TorchrunEnv

    n, seed, epoch = 11, 1, 2
    order = epoch_order(n, seed, epoch)
    shards = []
    for rank in range(3):
        group = Group(torch.device("cpu"), TorchrunEnv(rank, 3, rank, 3, "x:1"), "gloo")
        sampler = DistributedSampler(
            range(n), num_replicas=3, rank=rank, shuffle=True, seed=seed * 1_000_003
        )
        sampler.set_epoch(epoch)
        shard = group.shard(order)
        assert shard.tolist() == list(sampler)
        shards.append(shard)
    assert set(torch.cat(shards).tolist()) == set(range(n))
    assert all(len(shard) == 4 for shard in shards)
