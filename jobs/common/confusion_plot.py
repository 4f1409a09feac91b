"""The confusion matrix as a picture (Pillow): one cell per (true, predicted) pair, shaded by
its share of the true class's samples (so a rare class reads as clearly as a common one), the
count written in each cell while there is room, class names along both axes, and each class's
accuracy at the end of its row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from jobs.common.canvas import (
    INK,
    Colour,
    centred_text,
    font,
    save_png,
    text_size,
    vertical_text,
)
from jobs.common.confusion import ClassReport

CONFUSION_PNG = "confusion_matrix.png"
_GRID_PX = 520  # the matrix's side, before a cell is clamped to its limits
_CELL_MIN, _CELL_MAX = 4, 96
_NAMED_FROM = 12  # px: narrower cells get no class names (a 100-class matrix is a heat map)
_COUNTED_FROM = 26  # px: narrower cells get no count
_MAX_NAME = 14  # characters of a class name shown
_FULL: Colour = (31, 119, 180)
_MIN_SIZE = (360, 300)
_PAD = 12


@dataclass(frozen=True)
class MatrixPicture:
    image: Image.Image
    grid_box: tuple[int, int, int, int]  # left, top, right, bottom of the cells
    cell: int


def short_name(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


def draw_confusion(report: ClassReport) -> MatrixPicture:
    k = len(report.names)
    cell = max(_CELL_MIN, min(_CELL_MAX, _GRID_PX // max(k, 1)))
    named = cell >= _NAMED_FROM
    face, title_face = font(12 if cell < 20 else 13), font(14)
    names = [short_name(name) for name in report.names]
    name_width = max((text_size(name, face)[0] for name in names), default=0) if named else 0
    line = text_size("Mg", title_face)[1]
    # Column names stand on end under the grid when any is wider than its column.
    upright = named and name_width > cell - 4
    below = (name_width if upright else line) if named else 0
    accuracy_width = text_size("100%", face)[0] + 2 * _PAD if named else 0

    left = _PAD + line + _PAD + (name_width + _PAD if named else 0)
    top = _PAD + 2 * (line + 6) + _PAD + (line if named else 0)  # + the "acc." header
    grid = k * cell
    width = max(_MIN_SIZE[0], left + grid + accuracy_width + _PAD)
    height = max(_MIN_SIZE[1], top + grid + _PAD + below + _PAD + line + _PAD)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    box = (left, top, left + grid, top + grid)

    classes = report.classes
    for row, counts in enumerate(report.matrix):
        total = sum(counts)
        for column, count in enumerate(counts):
            share = count / total if total else 0.0
            x0, y0 = left + column * cell, top + row * cell
            draw.rectangle((x0, y0, x0 + cell, y0 + cell), fill=_shade(share))
            if cell >= _COUNTED_FROM and count and text_size(str(count), face)[0] < cell - 4:
                ink = (255, 255, 255) if share > 0.55 else INK
                centred_text(draw, (x0 + cell / 2, y0 + cell / 2), str(count), face, ink)
        if named:
            y = top + row * cell + cell / 2
            draw.text((left - _PAD // 2, y), names[row], fill=INK, font=face, anchor="rm")
            accuracy = classes[row].accuracy
            shown = "-" if accuracy is None else f"{accuracy:.0%}"
            draw.text((left + grid + _PAD, y), shown, fill=INK, font=face, anchor="lm")
    draw.rectangle(box, outline=INK)
    if named:
        draw.text((left + grid + _PAD, top - 4), "acc.", fill=INK, font=face, anchor="ld")
        for column, name in enumerate(names):
            x = left + column * cell + cell / 2
            if upright:
                wide = text_size(name, face)[0]
                vertical_text(image, (x, top + grid + _PAD // 2 + wide / 2), name, face)
            else:
                centred_text(draw, (x, top + grid + _PAD // 2 + line / 2), name, face)
    axis_y = top + grid + _PAD + below + _PAD + line / 2
    centred_text(draw, (left + grid / 2, axis_y), "predicted class", title_face)
    vertical_text(image, (_PAD + line / 2, top + grid / 2), "true class", title_face)
    correct = sum(report.matrix[index][index] for index in range(k))
    overall = f"{correct / report.total:.1%}" if report.total else "-"
    draw.text((_PAD, _PAD), "confusion matrix (validation)", fill=INK, font=title_face)
    draw.text(
        (_PAD, _PAD + line + 6),
        f"epoch {report.epoch}, step {report.step}: accuracy {overall} of {report.total}",
        fill=INK,
        font=face,
    )
    return MatrixPicture(image, box, cell)


def write_confusion_png(out_dir: Path, report: ClassReport) -> Path:
    """confusion_matrix.png in out_dir, replaced each epoch."""
    return save_png(draw_confusion(report).image, out_dir / CONFUSION_PNG)


def _shade(share: float) -> Colour:
    """White for none of the row's samples, the full colour for all of them."""
    return tuple(round(255 + (full - 255) * share) for full in _FULL)  # type: ignore[return-value]
