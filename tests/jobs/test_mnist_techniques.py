"""The training techniques of the mnist study: each does what it says, and each resumes exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.metrics import read_metrics
from jobs.common.plots import SIZE
from jobs.mnist_cnn.cli import main
from jobs.mnist_cnn.model import MnistCnn
from jobs.mnist_cnn.techniques import (
    augment,
    initialise,
    make_scheduler,
    sample_weights,
    weighted_order,
)

TINY = ["--synthetic", "600", "--seed", "3", "--log-every", "0"]


def run(folder: Path, *extra: str) -> int:
    return main(["--data", str(folder / "none"), "--out", str(folder / "out"), *TINY, *extra])


def params(folder: Path) -> dict[str, torch.Tensor]:
    path = latest_checkpoint(folder / "out")
    assert path is not None
    return load_checkpoint(path)["models"]["model"]


def test_class_weights_sample_only_the_weighted_digits() -> None:
    labels = torch.arange(10).repeat(50)
    weights = sample_weights(labels, [0, 0, 0, 1, 0, 0, 0, 0, 0, 3])
    order = weighted_order(weights, seed=1, epoch=0)
    drawn = labels[order]
    assert len(order) == len(labels)
    assert set(drawn.tolist()) == {3, 9}
    share_of_nine = (drawn == 9).double().mean().item()
    assert 0.65 < share_of_nine < 0.85  # 3:1 odds
    assert torch.equal(order, weighted_order(weights, seed=1, epoch=0)), "pure in (seed, epoch)"
    assert not torch.equal(order, weighted_order(weights, seed=1, epoch=1))


def test_balanced_weights_even_out_a_skewed_set() -> None:
    labels = torch.cat([torch.zeros(900, dtype=torch.int64), torch.arange(1, 10).repeat(10)])
    drawn = labels[weighted_order(sample_weights(labels, "balanced"), seed=0, epoch=0)]
    zero_share = (drawn == 0).double().mean().item()
    assert 0.05 < zero_share < 0.16, "digit 0 is 90% of the data but ~10% of the draws"


@pytest.mark.parametrize("name", ["step", "cosine", "onecycle"])
def test_lr_schedules_shape_the_rate(name: str) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = make_scheduler(
        name, optimizer, lr=0.01, steps_per_epoch=10, epochs=3, step_epochs=1, gamma=0.1
    )
    assert scheduler is not None
    rates = []
    for _ in range(30):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    if name == "step":
        assert math.isclose(rates[9], 1e-3) and math.isclose(rates[19], 1e-4)
    elif name == "cosine":
        assert rates[14] == pytest.approx(0.005, rel=0.05) and rates[-1] < 1e-6
    else:
        peak = max(rates)
        assert peak == pytest.approx(0.01, rel=0.05) and rates[-1] < 1e-4
        assert rates.index(peak) < 15, "warm up, then anneal"


def test_no_schedule_is_none() -> None:
    optimizer = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=0.01)
    assert (
        make_scheduler(
            "none", optimizer, lr=0.01, steps_per_epoch=1, epochs=1, step_epochs=1, gamma=0.1
        )
        is None
    )


def test_init_schemes_differ_as_documented() -> None:
    torch.manual_seed(0)
    model = MnistCnn()
    initialise(model, "kaiming")
    assert torch.count_nonzero(model.head.weight) == 0, "the base case starts from a zero head"
    initialise(model, "orthogonal")
    flat = model.head.weight  # 10 x 1600: rows are orthonormal
    assert torch.allclose(flat @ flat.T, torch.eye(10), atol=1e-5)
    initialise(model, "xavier")
    bound = math.sqrt(6 / (1600 + 10))
    assert model.head.weight.abs().max() <= bound
    initialise(model, "torch")
    assert torch.count_nonzero(model.head.bias) > 0, "PyTorch's default init has non-zero bias"


def test_augment_is_reproducible_and_really_moves_pixels() -> None:
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    a = augment(x, seed=0, epoch=0, batch=5)
    assert torch.equal(a, augment(x, seed=0, epoch=0, batch=5))
    assert not torch.equal(a, augment(x, seed=0, epoch=0, batch=6))
    assert not torch.allclose(a, x)
    assert a.sum().item() == pytest.approx(x.sum().item(), rel=0.25), "the digit stays in frame"
    still = augment(x, seed=0, epoch=0, batch=5, max_shift=0, max_degrees=0)
    assert torch.allclose(still, x, atol=1e-5)


def test_every_technique_together_resumes_exactly(tmp_path: Path) -> None:
    techniques = [
        "--class-weights",
        "balanced",
        "--lr-schedule",
        "onecycle",
        "--init",
        "xavier",
        "--augment",
        "--lr",
        "0.003",
        "--epochs",
        "2",
    ]
    assert run(tmp_path / "a", *techniques) == 0
    assert run(tmp_path / "b", *techniques, "--max-steps", "9") == 0
    assert run(tmp_path / "b", *techniques, "--resume") == 0
    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    lrs = [row["lr"] for row in read_metrics(tmp_path / "a" / "out") if row["split"] == "train"]
    assert lrs[-1] < 1e-4, "onecycle annealed the rate by the end"
    for name in ("loss.png", "lr.png"):  # the one-cycle schedule's shape is worth a look
        with Image.open(tmp_path / "a" / "out" / name) as picture:
            assert picture.format == "PNG" and picture.size == SIZE


def test_a_changed_technique_refuses_to_resume(tmp_path: Path, capsys) -> None:
    assert run(tmp_path, "--max-steps", "3") == 0
    assert run(tmp_path, "--resume", "--augment") == 2
    assert "--augment True differs from the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("weights", ["1,2,3", "a,b,c,d,e,f,g,h,i,j", "0,0,0,0,0,0,0,0,0,0"])
def test_bad_class_weights_are_one_line(tmp_path: Path, capsys, weights: str) -> None:
    assert run(tmp_path, "--class-weights", weights) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--class-weights" in err
