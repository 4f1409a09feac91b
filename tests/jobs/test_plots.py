"""Charts a person reads: round tick values in 1-2-5 steps on both axes, tick labels and axis
titles really drawn (a chart whose labels were dropped fails here), and a classifier's
loss/accuracy/learning-rate pictures of a sane size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.common.plots import Chart, classifier_charts, draw_line_chart, line_chart
from jobs.common.ticks import linear_axis, log_axis, nice_step, tick_labels, value_axis


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (0.0, 1.0, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)),
        (0.13, 0.97, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)),  # widened to the next round values
        (2.29, 2.31, (2.29, 2.295, 2.3, 2.305, 2.31)),
        (-1.2, 3.7, (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)),
        (0.0, 137.0, (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0)),
    ],
)
def test_ticks_are_round_values_covering_the_data(
    low: float, high: float, ticks: tuple[float, ...]
) -> None:
    axis = linear_axis(low, high)
    assert axis.ticks == pytest.approx(ticks)
    assert axis.low <= low and axis.high >= high
    steps = {round(b - a, 12) for a, b in zip(axis.ticks, axis.ticks[1:], strict=False)}
    assert len(steps) == 1  # evenly spaced
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1.0, 2.0, 5.0)


def test_nice_step_is_the_smallest_1_2_5_step_within_the_count() -> None:
    assert nice_step(1.0, 8) == pytest.approx(0.2)  # 0.125 rounds up to 0.2
    assert nice_step(137.0, 8) == pytest.approx(20.0)
    assert nice_step(0.02, 8) == pytest.approx(0.005)
    assert nice_step(9.0, 9) == pytest.approx(1.0)


def test_an_integer_axis_never_has_fractional_steps() -> None:
    assert linear_axis(1, 3, integer=True).labels == ("1", "2", "3")
    assert linear_axis(0, 7, integer=True).labels == ("0", "1", "2", "3", "4", "5", "6", "7")
    assert linear_axis(0, 1000, integer=True).labels[-1] == "1000"


def test_a_single_value_sits_mid_axis_between_round_ticks() -> None:
    axis = linear_axis(0.5, 0.5)
    assert axis.low < 0.5 < axis.high and "0.50" in axis.labels
    assert linear_axis(0, 0).ticks[0] < 0 < linear_axis(0, 0).ticks[-1]


def test_labels_carry_just_the_digits_the_step_needs() -> None:
    assert tick_labels((0.0, 0.25, 0.5), 0.25) == ("0.00", "0.25", "0.50")
    assert tick_labels((0.0, 50.0, 100.0), 50.0) == ("0", "50", "100")
    # Small learning rates: 1e-05 style rather than 0.000010.
    assert tick_labels((1e-4, 1.5e-4, 2e-4), 5e-5) == ("1.0e-04", "1.5e-04", "2.0e-04")


def test_a_learning_rate_over_decades_gets_a_log_axis() -> None:
    axis = value_axis([4e-7, 1e-3, 1e-2])
    assert axis.log and axis.labels == ("1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2")
    assert axis.fraction(1e-3) == pytest.approx(4 / 5)
    assert not value_axis([0.001, 0.002]).log  # a factor 2 reads fine on a linear axis
    assert log_axis(0.5, 0.5).ticks == (0.1, 1.0)


# --- drawing -----------------------------------------------------------------------------------


def ink(image: Image.Image, box: tuple[float, float, float, float]) -> int:
    """How many dark pixels (text, lines) lie in box (left, top, right, bottom)."""
    left, top, right, bottom = (round(v) for v in box)
    pixels = np.asarray(image.convert("L").crop((left, top, right, bottom)))
    return int((pixels < 128).sum())


def curve(**labels: str) -> Chart:
    chart = draw_line_chart(
        {"train": [(step, 1 / step) for step in range(1, 51)]}, title="loss by step", **labels
    )
    assert chart is not None
    return chart


def test_axis_titles_are_drawn_outside_the_plot_box() -> None:
    labelled = curve(x_label="step", y_label="loss")
    bare = curve(x_label="", y_label="")
    left, top, right, bottom = labelled.plot_box
    height = labelled.image.height
    # The x title's band under the tick labels, and the y title's column left of them.
    x_band = (left, bottom + 26, right, height)
    y_band = (0, top, 8 + 18, bottom)
    assert ink(labelled.image, x_band) > 40 and ink(bare.image, x_band) == 0
    assert ink(labelled.image, y_band) > 40 and ink(bare.image, y_band) == 0


def test_every_tick_has_a_mark_and_a_label() -> None:
    chart = curve(x_label="step", y_label="loss")
    left, top, right, bottom = chart.plot_box
    assert chart.x_axis.labels == ("0", "10", "20", "30", "40", "50")
    assert chart.y_axis.labels == ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0")
    for tick in chart.x_axis.ticks:
        x = left + chart.x_axis.fraction(tick) * (right - left)
        assert ink(chart.image, (x - 1, bottom + 1, x + 2, bottom + 5)) >= 3  # the mark
        assert ink(chart.image, (x - 12, bottom + 8, x + 12, bottom + 22)) > 5  # its label
    for tick in chart.y_axis.ticks:
        y = bottom - chart.y_axis.fraction(tick) * (bottom - top)
        assert ink(chart.image, (left - 5, y - 1, left - 1, y + 2)) >= 3
        assert ink(chart.image, (left - 40, y - 7, left - 8, y + 7)) > 5


def test_nothing_finite_draws_nothing(tmp_path: Path) -> None:
    series = {"train": [(1.0, float("nan")), (2.0, None), (3.0, float("inf"))]}
    assert line_chart(series, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def metrics_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for step in range(1, 31):
        lr = 0.01 * 0.5 * (1 + math.cos(math.pi * step / 30)) + 1e-6  # cosine, over decades
        rows.append({"step": step, "split": "train_step", "loss": 2 / step, "lr": lr})
    for epoch in (1, 2, 3):
        common = {"step": 10 * epoch, "epoch": epoch, "lr": 0.01}
        rows.append({**common, "split": "train", "loss": 1 / epoch, "accuracy": 1 - 0.3 / epoch})
        rows.append({**common, "split": "val", "loss": 1.1 / epoch, "accuracy": 1 - 0.4 / epoch})
    return rows


def test_a_classifier_gets_loss_accuracy_and_lr_charts(tmp_path: Path) -> None:
    paths = classifier_charts(metrics_rows(), tmp_path)
    assert [path.name for path in paths] == ["loss.png", "accuracy.png", "lr.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.width >= 300 and image.height >= 200
            grey = np.asarray(image.convert("L"))
            # Not blank: lines, text and grid, yet mostly white background.
            assert 0.01 < (grey < 200).mean() < 0.5
            colours = {tuple(p) for p in np.asarray(image.convert("RGB")).reshape(-1, 3)[::7]}
            assert len(colours) > 10


def test_pictures_are_replaced_in_place_with_no_temp_files_left(tmp_path: Path) -> None:
    classifier_charts(metrics_rows()[:10], tmp_path)  # no epoch rows yet: no accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "lr.png"]
    first = (tmp_path / "loss.png").read_bytes()
    classifier_charts(metrics_rows(), tmp_path)
    assert (tmp_path / "loss.png").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "loss.png", "lr.png"]
