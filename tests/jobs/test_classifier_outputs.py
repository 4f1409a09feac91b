"""What each classifier leaves in --out for a person: loss, accuracy and learning-rate charts, the
confusion matrix and per-class accuracy under the dataset's own class names, a summary that
lists them, and model_weights.pt (weights alone) beside the resumable checkpoints. Tiny runs on
generated data, in process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import WEIGHTS_FILE, latest_checkpoint, load_checkpoint
from jobs.common.summary import read_summary

PICTURES = ("loss.png", "accuracy.png", "lr.png", "confusion_matrix.png")


def per_class(out: Path) -> dict:
    return json.loads((out / "per_class.json").read_text())


def check_pictures(out: Path) -> None:
    for name in PICTURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200, name
            assert len(set(np.asarray(image.convert("L")).ravel().tolist())) > 8, name


def check_weights_file(out: Path, fresh: torch.nn.Module) -> None:
    """model_weights.pt is the model's state_dict alone: it loads (weights_only) into a fresh
    model with strict key checks, equals the last checkpoint's model and holds no optimizer."""
    weights = torch.load(out / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in weights.values())
    assert not {"optimizers", "optimizer", "state", "param_groups", "rng"} & set(weights)
    fresh.load_state_dict(weights)  # strict: every key and shape
    saved = load_checkpoint(latest_checkpoint(out))["models"]["model"]
    assert weights.keys() == saved.keys()
    assert all(torch.equal(weights[key], saved[key]) for key in saved)
    assert (out / WEIGHTS_FILE).stat().st_size < latest_checkpoint(out).stat().st_size


# --- transfer: class names are the folder names ------------------------------------------------


def write_three_classes(root: Path, count: int) -> Path:
    """Pictures named by folder, told apart by their dominant colour channel."""
    rng = np.random.default_rng(5)
    for index in range(count):
        channel = index % 3
        folder = root / ("cats", "dogs", "zebra crossings")[channel]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 90, (32, 32, 3))
        pixels[..., channel] += 140
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:03d}.png")
    return root


def test_transfer_names_classes_after_their_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.transfer.cli import main
    from jobs.transfer.data import load_splits
    from jobs.transfer.models import build_model

    data, out = write_three_classes(tmp_path / "data", 45), tmp_path / "out"
    flags = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "16", "--seed", "1"]
    assert main(["--data", str(data), "--out", str(out), *flags, "--epochs", "2"]) == 0
    log = capsys.readouterr().out
    names = ["cats", "dogs", "zebra crossings"]
    report = per_class(out)
    assert report["class_names"] == names and report["epoch"] == 2
    val_count = len(load_splits(data, 32, 0.2, 1).val_y)
    assert sum(map(sum, report["confusion"])) == val_count == 9
    with (out / "per_class.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == names
    assert sum(int(row["count"]) for row in rows) == val_count
    summary = read_summary(out)
    assert summary is not None and list(summary["per_class_accuracy"]) == names
    assert "per-class val accuracy (epoch 2):" in log and "  zebra crossings  " in log
    # The stages' rates when no flag sets them, on the start-up line.
    assert "sgd lr 0.01 for the head, 0.001 to fine-tune (the defaults for resnet + sgd)" in log
    check_pictures(out)
    check_weights_file(out, build_model("resnet18", 3))


# --- mnist_cnn: the digits, and a class left out of training ----------------------------------


def test_mnist_per_class_shows_the_digit_that_sampling_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.mnist_cnn.cli import main
    from jobs.mnist_cnn.model import MnistCnn

    out = tmp_path / "out"
    weights = "1,1,1,0,1,1,1,1,1,1"  # digit 3 is never drawn for training
    argv = ["--data", "x", "--out", str(out), "--synthetic", "600", "--seed", "7"]
    assert main([*argv, "--log-every", "0", "--lr", "0.003", "--class-weights", weights]) == 0
    log = capsys.readouterr().out
    report = per_class(out)
    assert report["class_names"] == [str(digit) for digit in range(10)]
    assert sum(map(sum, report["confusion"])) == 60  # --val-fraction 0.1 of 600
    three = report["per_class"][3]
    assert three["count"] > 0 and three["accuracy"] == 0.0 and three["predicted"] == 0
    summary = read_summary(out)
    assert summary is not None and summary["per_class_accuracy"]["3"] == 0.0
    assert sum(value > 0.3 for value in summary["per_class_accuracy"].values()) >= 5
    assert f"  3    0.0% of {three['count']}" in log
    check_pictures(out)
    check_weights_file(out, MnistCnn())


# --- text_classifier: the label column's values --------------------------------------------


def test_text_classifier_names_classes_by_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.text_classifier.cli import main
    from jobs.text_classifier.model import ModelConfig, build_model

    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--synthetic", "150"]
    tiny = ["--model", "bag", "--max-len", "32", "--seed", "3", "--log-every", "2"]
    assert main([*argv, *tiny, "--epochs", "2"]) == 0
    log = capsys.readouterr().out
    report = per_class(out)
    assert report["class_names"] == ["FAKE", "REAL"]
    assert sum(map(sum, report["confusion"])) == 30  # --val-fraction 0.2 of 150
    assert "per-class val accuracy (epoch 2):" in log and "  REAL  " in log
    check_pictures(out)
    state = load_checkpoint(latest_checkpoint(out))
    check_weights_file(out, build_model(ModelConfig.from_plain(state["extra"]["model_config"])))
