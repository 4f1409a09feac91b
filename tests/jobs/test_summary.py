"""The run summary and its verdicts, on generated rows shaped as MetricsWriter writes them."""

import json
import math
from pathlib import Path

import pytest

from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.summary import (
    classifier_summary,
    gan_summary,
    read_summary,
    render,
    write_summary,
)


def _write(out: Path, rows: list[dict]) -> list[dict]:
    with MetricsWriter(out, tensorboard=False) as metrics:
        for row in rows:
            metrics.log(**row)
    return read_metrics(out)


def test_a_learning_classifier_has_no_verdict_and_names_its_best_epoch(tmp_path: Path) -> None:
    rows = _write(
        tmp_path,
        [
            {"step": 10, "epoch": 0, "split": "val", "loss": 1.0, "accuracy": 0.6},
            {"step": 20, "epoch": 1, "split": "val", "loss": 0.5, "accuracy": 0.9},
            {"step": 30, "epoch": 2, "split": "val", "loss": 0.6, "accuracy": 0.85},
        ],
    )
    summary = classifier_summary(rows, workload="mnist_cnn", num_classes=10)
    assert summary["verdict"] is None
    assert summary["best_accuracy"] == {"value": 0.9, "epoch": 1, "step": 20}
    assert summary["final"]["accuracy"] == 0.85


def test_shuffled_labels_are_judged_at_chance(tmp_path: Path) -> None:
    # Two classes, accuracy stuck near 50 %: what a classifier given shuffled labels reaches.
    rows = _write(
        tmp_path,
        [
            {"step": s, "epoch": s, "split": "val", "loss": 0.69, "accuracy": a}
            for s, a in enumerate([0.52, 0.48, 0.417])
        ],
    )
    verdict = classifier_summary(rows, workload="transfer", num_classes=2)["verdict"]
    assert verdict is not None and "chance" in verdict and "50.0%" in verdict


def test_nan_loss_is_judged_diverged(tmp_path: Path) -> None:
    rows = _write(
        tmp_path,
        [
            {"step": 1, "epoch": 0, "split": "train", "loss": 2.3, "accuracy": 0.1},
            {"step": 2, "epoch": 0, "split": "train", "loss": math.nan, "accuracy": 0.1},
        ],
    )
    verdict = classifier_summary(rows, workload="mnist_cnn", num_classes=10)["verdict"]
    assert verdict is not None and "NaN" in verdict


def test_a_loss_that_explodes_but_stays_finite_is_diverged() -> None:
    rows = [
        {"step": 1, "epoch": 0, "split": "train", "loss": 0.7},
        {"step": 2, "epoch": 1, "split": "train", "loss": 36.8 * 10},
    ]
    verdict = classifier_summary(rows, workload="transfer", num_classes=2)["verdict"]
    assert verdict is not None and "diverged" in verdict


def test_a_gan_whose_discriminator_wins_is_collapsed() -> None:
    rows = [
        {"step": s, "epoch": s, "split": "train", "loss_d": d, "loss_g": 8.0}
        for s, d in enumerate([1.2, 0.6, 0.1, 0.01, 0.004])
    ]
    verdict = gan_summary(rows, workload="dcgan")["verdict"]
    assert verdict is not None and "collapsed" in verdict
    healthy = [dict(row, loss_d=0.6) for row in rows]
    assert gan_summary(healthy, workload="dcgan")["verdict"] is None


def test_a_gan_with_no_sample_diversity_is_mode_collapsed() -> None:
    rows = [
        {"step": 1, "epoch": 0, "split": "train", "loss_d": 0.7, "loss_g": 1.0, "div": 0.3},
        {"step": 2, "epoch": 1, "split": "train", "loss_d": 0.7, "loss_g": 1.0, "div": 0.001},
    ]
    summary = gan_summary(rows, workload="dcgan", diversity_field="div")
    assert summary["verdict"] is not None and "mode collapse" in summary["verdict"]
    assert summary["best_diversity"]["value"] == pytest.approx(0.3)


def test_summary_is_written_as_json_and_printed_on_one_screen(tmp_path: Path, capsys) -> None:
    summary = classifier_summary(
        [{"step": 5, "epoch": 0, "split": "val", "loss": 0.69, "accuracy": 0.5}],
        workload="transfer",
        num_classes=2,
    )
    path = write_summary(tmp_path, summary)
    assert json.loads(path.read_text()) == summary == read_summary(tmp_path)
    printed = capsys.readouterr().out
    assert printed.startswith("== transfer summary ==") and "WARNING:" in printed
    assert len(render(summary).splitlines()) <= 24


def test_a_gan_summary_names_where_its_quality_figure_was_best() -> None:
    rows = [
        {"step": s, "epoch": s, "split": "train", "loss_d": 0.7, "loss_g": 1.0, "fid_proxy": q}
        for s, q in enumerate([3.0, 1.5, 2.0], start=1)
    ]
    summary = gan_summary(rows, workload="dcgan", quality_field="fid_proxy")
    assert summary["best_quality"] == {"value": 1.5, "epoch": 2, "step": 2}
    assert "best quality: 1.5 at epoch 2" in render(summary)
