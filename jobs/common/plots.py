"""Line charts as PNG, drawn with Pillow (no matplotlib on the nodes): one line per series,
both axes with round tick values (jobs/common/ticks.py), tick labels, grid lines and axis
titles, and a legend. Written atomically, so a person can open one while training runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from PIL import Image, ImageDraw

from jobs.common.canvas import (
    FAINT,
    INK,
    Colour,
    centred_text,
    font,
    save_png,
    text_size,
    vertical_text,
)
from jobs.common.ticks import Axis, linear_axis, value_axis

_COLOURS: list[Colour] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
]
# A metrics split keeps its colour on every chart (val is green on loss.png and accuracy.png).
_SPLIT_COLOURS = {"train_step": 0, "train": 1, "val": 2}
SIZE = (720, 450)
_TICK = 5  # px a tick mark reaches out of the plot box
_GAP = 4  # px between a tick mark and its label
_TOP, _RIGHT, _BOTTOM = 34, 24, 54  # room for the title and legend; x tick labels and title

Point = tuple[float, float]
Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Chart:
    """A drawn chart and where things are on it (what the tests read)."""

    image: Image.Image
    plot_box: Box
    x_axis: Axis
    y_axis: Axis
    x_label: str
    y_label: str


def finite_points(values: Sequence[tuple[float, float | None]]) -> list[Point]:
    """The points with a finite y: the metrics writer stores NaN and inf as null."""
    return [
        (float(x), float(y)) for x, y in values if isinstance(y, int | float) and math.isfinite(y)
    ]


def draw_line_chart(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    title: str = "",
    x_label: str = "step",
    y_label: str = "",
    integer_x: bool = True,
    staircase: bool = False,
) -> Chart | None:
    """series: name -> [(x, y), ...]. None when no point is finite (nothing to draw).
    `staircase`: each y holds from the previous point's x to its own (a learning rate logged
    at the end of the steps it was used for), drawn flat rather than as a slope."""
    points = {name: finite_points(values) for name, values in series.items()}
    everything = [point for values in points.values() for point in values]
    if not everything:
        return None
    x_axis = linear_axis(
        min(p[0] for p in everything), max(p[0] for p in everything), integer=integer_x
    )
    y_axis = value_axis([p[1] for p in everything])
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    face = font(13)
    label_width = max(text_size(label, face)[0] for label in y_axis.labels)
    # Room on the left for the sideways y title (a line of text tall) and the tick labels.
    left = 8 + text_size("Mg", face)[1] + 10 + label_width + _GAP + _TICK
    box: Box = (left, _TOP, SIZE[0] - _RIGHT, SIZE[1] - _BOTTOM)

    def to_pixel(x: float, y: float) -> Point:
        return (
            box[0] + x_axis.fraction(x) * (box[2] - box[0]),
            box[3] - y_axis.fraction(y) * (box[3] - box[1]),
        )

    _draw_axes(image, draw, box, x_axis, y_axis, x_label, y_label)
    colours = _colours(list(points))
    for name, values in points.items():
        colour = colours[name]
        pixels = [to_pixel(x, y) for x, y in sorted(values)]
        path = _stairs(pixels) if staircase else pixels
        if len(path) > 1:
            draw.line(path, fill=colour, width=2)
        for x, y in pixels if len(pixels) <= 30 else ():  # few points: mark each one
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)
    _draw_legend(draw, box, {name: colours[name] for name, values in points.items() if values})
    if title:
        draw.text((box[0], 10), title, fill=INK, font=font(14))
    return Chart(image, box, x_axis, y_axis, x_label, y_label)


def _stairs(pixels: list[Point]) -> list[Point]:
    """(x0, y0), (x0, y1), (x1, y1), (x1, y2), ...: y1 held over (x0, x1]."""
    path = pixels[:1]
    for (x_before, _), (x, y) in pairwise(pixels):
        path += [(x_before, y), (x, y)]
    return path


def _colours(names: list[str]) -> dict[str, Colour]:
    """A split's own colour where it has one; other series take the next unused ones."""
    taken = {_SPLIT_COLOURS[name] for name in names if name in _SPLIT_COLOURS}
    free = (index for index in range(len(names) + len(_COLOURS)) if index not in taken)
    return {
        name: _COLOURS[
            (_SPLIT_COLOURS[name] if name in _SPLIT_COLOURS else next(free)) % len(_COLOURS)
        ]
        for name in names
    }


def _draw_axes(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: Box,
    x_axis: Axis,
    y_axis: Axis,
    x_label: str,
    y_label: str,
) -> None:
    """Grid lines and tick marks at every tick, tick labels, the box and both axis titles."""
    left, top, right, bottom = box
    face = font(13)
    for tick, label in zip(x_axis.ticks, x_axis.labels, strict=True):
        x = left + x_axis.fraction(tick) * (right - left)
        draw.line((x, top, x, bottom), fill=FAINT)
        draw.line((x, bottom, x, bottom + _TICK), fill=INK)
        centred_text(draw, (x, bottom + _TICK + _GAP + 7), label, face)
    for tick, label in zip(y_axis.ticks, y_axis.labels, strict=True):
        y = bottom - y_axis.fraction(tick) * (bottom - top)
        draw.line((left, y, right, y), fill=FAINT)
        draw.line((left - _TICK, y, left, y), fill=INK)
        draw.text((left - _TICK - _GAP, y), label, fill=INK, font=face, anchor="rm")
    draw.rectangle(box, outline=INK)
    title_face = font(14)
    if x_label:
        centred_text(draw, ((left + right) / 2, SIZE[1] - 14), x_label, title_face)
    if y_label:
        vertical_text(
            image, (8 + text_size("Mg", title_face)[1] / 2, (top + bottom) / 2), y_label, title_face
        )


def _draw_legend(draw: ImageDraw.ImageDraw, box: Box, colours: Mapping[str, Colour]) -> None:
    """Series names with their colour swatch, right-aligned above the plot box."""
    face = font(13)
    x = box[2]
    for name, colour in reversed(colours.items()):
        shown = name or "(none)"
        x -= text_size(shown, face)[0]
        draw.text((x, _TOP - 18), shown, fill=INK, font=face)
        draw.line((x - 22, _TOP - 11, x - 6, _TOP - 11), fill=colour, width=3)
        x -= 36


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    path: Path,
    title: str = "",
    *,
    x_label: str = "step",
    y_label: str = "",
    integer_x: bool = True,
    staircase: bool = False,
) -> Path | None:
    """draw_line_chart saved as `path`; None (and no file) when there is nothing to draw."""
    chart = draw_line_chart(
        series,
        title=title,
        x_label=x_label,
        y_label=y_label,
        integer_x=integer_x,
        staircase=staircase,
    )
    return None if chart is None else save_png(chart.image, path)


def metric_series(
    rows: Sequence[Mapping[str, object]], key: str, splits: Sequence[str] | None = None
) -> dict[str, list[Point]]:
    """`key` against step, one series per metrics split (train_step, train, val), in the
    order the splits first appear; only `splits` when given."""
    series: dict[str, list[Point]] = {}
    for row in rows:
        value, step, split = row.get(key), row.get("step"), str(row.get("split", ""))
        if splits is not None and split not in splits:
            continue
        if isinstance(value, int | float) and isinstance(step, int | float):
            series.setdefault(split, []).append((float(step), float(value)))
    return series


def loss_curves(
    rows: Sequence[Mapping[str, object]], path: Path, key: str = "loss", y_label: str = ""
) -> Path | None:
    """One line per metrics split (train, val, ...) of `key` against step, from metrics rows."""
    return line_chart(
        metric_series(rows, key), path, title=f"{key} by step", y_label=y_label or key
    )


def classifier_charts(rows: Sequence[Mapping[str, object]], out: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png of a classifier's run, by step. Accuracy per epoch
    only (train and val): a train_step interval of a few batches is too noisy to read beside
    them. The learning rate from the train_step rows, which follow a schedule within an
    epoch, else from the per-epoch train rows."""
    has_steps = any(row.get("split") == "train_step" for row in rows)
    charts = [
        line_chart(metric_series(rows, "loss"), out / "loss.png", "loss by step", y_label="loss"),
        line_chart(
            metric_series(rows, "accuracy", ("train", "val")),
            out / "accuracy.png",
            "accuracy by step (per epoch)",
            y_label="accuracy",
        ),
        line_chart(
            {
                "lr": _merged(
                    metric_series(rows, "lr", ("train_step",) if has_steps else ("train",))
                )
            },
            out / "lr.png",
            "learning rate by step",
            y_label="learning rate",
            staircase=True,
        ),
    ]
    return [path for path in charts if path is not None]


def _merged(series: Mapping[str, list[Point]]) -> list[Point]:
    return [point for values in series.values() for point in values]
