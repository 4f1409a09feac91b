"""End-to-end behaviour of ``python -m jobs.mnist_cnn`` on tiny synthetic data."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from jobs.common.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from jobs.common.metrics import read_metrics
from jobs.common.summary import read_summary
from jobs.mnist_cnn.cli import main

MODULE = "jobs.mnist_cnn"
# 600 digits -> 540 train / 60 val -> 17 steps of 32 per epoch.
TINY = ["--synthetic", "600", "--seed", "7", "--log-every", "0"]


def run(tmp: Path, *extra: str) -> int:
    return main(["--data", str(tmp / "no-data"), "--out", str(tmp / "out"), *TINY, *extra])


def final_state(out: Path) -> dict:
    path = latest_checkpoint(out)
    assert path is not None
    return load_checkpoint(path)


def test_one_epoch_learns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "--data",
                "x",
                "--out",
                str(out),
                "--synthetic",
                "3000",
                "--epochs",
                "1",
                "--log-every",
                "10",
            ]
        )
        == 0
    )
    rows = read_metrics(out)
    steps = [r for r in rows if r["split"] == "train_step"]
    val = [r for r in rows if r["split"] == "val"]
    assert len(steps) >= 5 and len(val) == 1
    assert steps[-1]["loss"] < 0.5 * steps[0]["loss"]
    assert val[0]["accuracy"] > 0.6  # chance is 0.1
    assert all(r["time"] > 0 and r["epoch"] == 1 for r in rows)
    summary = read_summary(out)
    assert summary is not None and summary["verdict"] is None
    assert summary["best_accuracy"]["value"] == val[0]["accuracy"]


def test_interrupted_then_resumed_equals_unbroken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unbroken, broken = tmp_path / "a", tmp_path / "b"
    assert run(unbroken, "--epochs", "2") == 0
    # Stop mid-epoch 1 (step 7 of 17), then mid-epoch 2 (step 25), then finish.
    assert run(broken, "--epochs", "2", "--max-steps", "7") == 0
    assert final_state(broken / "out")["step"] == 7
    assert run(broken, "--epochs", "2", "--resume", "--max-steps", "25") == 0
    assert final_state(broken / "out")["step"] == 25
    assert run(broken, "--epochs", "2", "--resume") == 0
    assert "resume: " in capsys.readouterr().out

    a, b = final_state(unbroken / "out"), final_state(broken / "out")
    assert a["step"] == b["step"] == 34 and a["epoch"] == b["epoch"] == 2
    for name, tensor in a["models"]["model"].items():
        assert torch.equal(tensor, b["models"]["model"][name]), name
    for key, slot in a["optimizers"]["optimizer"]["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, b["optimizers"]["optimizer"]["state"][key][name])
    # The epoch summaries agree too, since partial-epoch sums travel in the checkpoint.
    summary = [
        (r["split"], r["loss"], r["accuracy"])
        for r in read_metrics(unbroken / "out")
        if r["split"] in ("train", "val")
    ]
    resumed = [
        (r["split"], r["loss"], r["accuracy"])
        for r in read_metrics(broken / "out")
        if r["split"] in ("train", "val")
    ]
    assert resumed == summary


def test_resume_without_checkpoint_starts_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--resume") == 0
    out = capsys.readouterr().out
    assert "no checkpoint" in out and "starting fresh" in out
    assert final_state(tmp_path / "out")["epoch"] == 1


def test_resume_of_finished_run_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path) == 0
    before = [p.name for _, p in list_checkpoints(tmp_path / "out")]
    capsys.readouterr()
    assert run(tmp_path, "--resume") == 0
    assert "done: val accuracy" in capsys.readouterr().out
    assert [p.name for _, p in list_checkpoints(tmp_path / "out")] == before


def test_keep_prunes_old_checkpoints(tmp_path: Path) -> None:
    assert run(tmp_path, "--epochs", "3", "--keep", "2") == 0
    assert [s for s, _ in list_checkpoints(tmp_path / "out")] == [34, 51]


def test_timed_checkpoints_between_epochs(tmp_path: Path) -> None:
    # A tiny interval makes every step "due": a checkpoint per step, all kept.
    assert run(tmp_path, "--checkpoint-every-minutes", "1e-9", "--keep", "100") == 0
    assert [s for s, _ in list_checkpoints(tmp_path / "out")] == list(range(1, 18))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ([], [], "already holds checkpoints"),
        ([], ["--resume", "--lr", "0.001"], "--lr 0.001 differs from the checkpoint's 0.01"),
    ],
)
def test_unsafe_reuse_of_out_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    first: list[str],
    second: list[str],
    message: str,
) -> None:
    assert run(tmp_path, *first) == 0
    capsys.readouterr()
    assert run(tmp_path, *second) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_corrupt_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03short")
    (data / "train-labels-idx1-ubyte").write_bytes(b"")
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-images-idx3-ubyte" in err and "re-download" in err


def test_real_idx_files_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_mnist
) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    fake_mnist(data, 64, 16, gz=True)
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 0
    assert "64 train / 16 val" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{tmp}", "--out", "{tmp}/o", "--epochs", "-1"], "--epochs"),
        (["--data", "{tmp}/missing", "--out", "{tmp}/o"], "--data"),
        (["--out", "{tmp}/o", "--synthetic", "10"], "--data"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--val-fraction", "1.5"], "--val-fraction"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_module, tmp_path: Path, argv: list[str], needle: str
) -> None:
    result = run_module(MODULE, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_sigterm_saves_and_exits_0(tmp_path: Path, spawn_module) -> None:
    out = tmp_path / "out"
    proc = spawn_module(
        MODULE,
        "--data",
        str(tmp_path),
        "--out",
        str(out),
        "--synthetic",
        "2000",
        "--epochs",
        "200",
        "--log-every",
        "0",
    )
    first = proc.stdout.readline()  # the start-up line: data is ready, training begins
    assert first.startswith("mnist_cnn: "), first
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in rest and "Traceback" not in err
    state = load_checkpoint(latest_checkpoint(out))
    assert state["step"] >= 1 and state["epoch"] < 200
    assert all(torch.isfinite(t).all() for t in state["models"]["model"].values())
