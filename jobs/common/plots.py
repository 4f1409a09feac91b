"""Loss curves as PNG, drawn with Pillow (no matplotlib on the nodes): one line per series,
axes with min/max labels. Written atomically, so a person can open it while training runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
_WIDTH, _HEIGHT, _MARGIN = 640, 400, 48


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], path: Path, title: str = ""
) -> Path | None:
    """series: name -> [(x, y), ...]. Returns the PNG's path, or None if there is nothing to
    draw (no finite points)."""
    points = {
        name: [(x, y) for x, y in values if y is not None and y == y and abs(y) != float("inf")]
        for name, values in series.items()
    }
    everything = [point for values in points.values() for point in values]
    if not everything:
        return None
    xs, ys = [p[0] for p in everything], [p[1] for p in everything]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    image = Image.new("RGB", (_WIDTH, _HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN, _MARGIN // 2, _WIDTH - _MARGIN // 2, _HEIGHT - _MARGIN
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_lo) / x_span * (right - left),
            bottom - (y - y_lo) / y_span * (bottom - top),
        )

    for index, (name, values) in enumerate(points.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        pixels = [to_pixel(x, y) for x, y in sorted(values)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        elif pixels:
            x, y = pixels[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        draw.text((left + 8, top + 6 + 14 * index), name, fill=colour)
    draw.text((4, top), f"{y_hi:.3g}", fill=(0, 0, 0))
    draw.text((4, bottom - 10), f"{y_lo:.3g}", fill=(0, 0, 0))
    draw.text((left, bottom + 6), f"{x_lo:g}", fill=(0, 0, 0))
    draw.text((right - 40, bottom + 6), f"{x_hi:g}", fill=(0, 0, 0))
    if title:
        draw.text((left + (right - left) // 2 - 3 * len(title), bottom + 24), title, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    image.save(temp, format="PNG")
    temp.replace(path)
    return path


def loss_curves(rows: Sequence[Mapping[str, object]], path: Path, key: str = "loss") -> Path | None:
    """One line per metrics split (train, val, ...) of `key` against step, from metrics rows."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        value, step = row.get(key), row.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)):
            series.setdefault(str(row.get("split", "")), []).append((float(step), float(value)))
    return line_chart(series, path, title=f"{key} by step")
