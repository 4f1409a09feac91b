"""jobs.common building blocks: checkpoints, RNG state, metrics, CLI parsing, signals."""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.common.checkpoint import (
    SaveSchedule,
    capture_training_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from jobs.common.cli import make_parser
from jobs.common.device import amp_settings, select_device
from jobs.common.errors import UsageError
from jobs.common.metrics import MetricsWriter, read_metrics, rewind_metrics
from jobs.common.progress import classification_step
from jobs.common.seeding import capture_rng_state, restore_rng_state, seed_everything
from jobs.common.signals import stop_on_signals


def test_save_names_latest_and_prune(tmp_path: Path) -> None:
    for step in (5, 10, 200, 30):
        save_checkpoint(tmp_path, step, {"step": step}, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 30, 200]
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000200.pt"
    assert load_checkpoint(tmp_path / "ckpt-00000030.pt") == {"step": 30}
    assert not list(tmp_path.glob(".ckpt-*"))  # no temp files left behind


def test_latest_checkpoint_empty_or_missing(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "absent") is None
    (tmp_path / "ckpt-12.pt").write_bytes(b"")  # not the ckpt-{step:08d}.pt pattern
    assert latest_checkpoint(tmp_path) is None


def test_interrupted_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, {"ok": True})

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 2, {"ok": False})
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000001.pt"]


def test_unreadable_latest_falls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"garbage")
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000001.pt" and state == {"step": 1}
    assert "skipping unreadable checkpoint" in capsys.readouterr().err


def test_training_state_round_trip_is_weights_only(tmp_path: Path) -> None:
    seed_everything(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    args = make_parser("t", "t").parse_args(["--data", "d", "--out", str(tmp_path)])
    state = capture_training_state(
        models={"m": model},
        optimizers={"o": opt},
        schedulers={"s": sched},
        epoch=2,
        step=7,
        args=args,
        extra={"k": 1},
    )
    path = save_checkpoint(tmp_path, 7, state)
    expected_next = (random.random(), np.random.rand(), torch.rand(1))

    loaded = load_checkpoint(path)  # weights_only=True inside
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1)
    restore_training_state(
        loaded, models={"m": model2}, optimizers={"o": opt2}, schedulers={"s": sched2}
    )
    assert torch.equal(model.weight, model2.weight)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)
    assert loaded["args"]["out"] == str(tmp_path) and loaded["extra"] == {"k": 1}
    assert (loaded["epoch"], loaded["step"]) == (2, 7)
    # RNG streams continue exactly where they were when the checkpoint was captured.
    assert (random.random(), np.random.rand()) == expected_next[:2]
    assert torch.equal(torch.rand(1), expected_next[2])


def test_rng_round_trip() -> None:
    seed_everything(123)
    np.random.randn()  # leave numpy with a cached gaussian, the awkward part of its state
    state = capture_rng_state()
    first = (random.random(), np.random.randn(), torch.randn(2))
    restore_rng_state(state)
    second = (random.random(), np.random.randn(), torch.randn(2))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_save_schedule() -> None:
    assert not SaveSchedule(10.0).due()
    assert SaveSchedule(0.0).due()


def test_metrics_lines_parse(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as writer:
        writer.log(
            step=1, epoch=1, split="train", loss=0.5, accuracy=0.9, lr=0.01, samples_per_s=100.0
        )
        writer.log(step=2, epoch=1, split="val", loss=float("nan"))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == read_metrics(tmp_path)
    assert rows[0]["split"] == "train" and rows[0]["accuracy"] == 0.9
    assert rows[1]["loss"] is None  # NaN is not valid JSON
    keys = {"step", "epoch", "split", "loss", "accuracy", "lr", "samples_per_s", "time"}
    assert all(keys <= row.keys() for row in rows)


def test_a_resume_drops_the_metrics_rows_logged_after_its_checkpoint(tmp_path: Path) -> None:
    """A node that died without warning logged steps 5 to 7 after its step-4 checkpoint; the
    resumed run logs them again, so they go (and a line torn mid-write with them)."""
    with MetricsWriter(tmp_path) as writer:
        for step in range(1, 8):
            writer.log(step=step, epoch=1, split="train_step", loss=1.0 / step)
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 8, "epo')
    assert rewind_metrics(tmp_path, 4) == 4
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert rewind_metrics(tmp_path, 4) == 0
    assert rewind_metrics(tmp_path / "none", 4) == 0


def test_common_args_defaults() -> None:
    args = make_parser("t", "t").parse_args(["--data", "d", "--out", "o"])
    assert (args.epochs, args.seed, args.device, args.keep) == (1, 0, "auto", 3)
    assert args.checkpoint_every_minutes == 10.0 and not args.resume and not args.amp


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "argument --epochs: must be an integer >= 1"),
        (["--keep", "0"], "argument --keep: must be an integer >= 1"),
        (["--checkpoint-every-minutes", "0"], "must be a number > 0"),
        (["--device", "tpu"], "argument --device: invalid choice"),
    ],
)
def test_bad_common_flags_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        make_parser("t", "t").parse_args(["--data", "d", "--out", "o", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_stop_flag_on_sigterm_and_handler_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    auto = select_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda"):
            select_device("cuda")
    assert not amp_settings(torch.device("cpu"), requested=True).enabled


def test_jobs_never_import_gpujobs() -> None:
    # jobs/ runs alone on remote nodes where gpujobs is not installed.
    root = Path(__file__).resolve().parents[2] / "jobs"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "gpujobs" for n in names), path


def test_flag_parsing_does_not_import_torch(run_module) -> None:
    # Bad flags must fail fast: the CLI layer imports torch only after parsing.
    code = "import sys, jobs.mnist_cnn.cli; print('torch' in sys.modules)"
    result = run_module("jobs.mnist_cnn", "--help")
    assert result.returncode == 0 and "--synthetic" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert probe.stdout.strip() == "False"


def test_a_clipped_step_moves_the_weights_no_further_than_lr_times_the_norm() -> None:
    """SGD's first step is lr x gradient: clipped to norm c, the weights move by lr x c."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(16, 8) * 100, torch.randint(0, 3, (16,))  # large inputs, large gradients
    amp = amp_settings(torch.device("cpu"), False)
    moved = {}
    for clip in (None, 0.01):
        trial = torch.nn.Linear(8, 3)
        trial.load_state_dict(model.state_dict())
        before = torch.cat([p.detach().clone().ravel() for p in trial.parameters()])
        optimizer = torch.optim.SGD(trial.parameters(), lr=0.1, momentum=0.9)
        scaler = amp.grad_scaler()
        classification_step(trial, optimizer, scaler, amp, x, y, clip)
        after = torch.cat([p.detach().ravel() for p in trial.parameters()])
        moved[clip] = float((after - before).norm())
    assert moved[0.01] == pytest.approx(0.1 * 0.01, rel=1e-4)
    assert moved[None] > 100 * moved[0.01]
