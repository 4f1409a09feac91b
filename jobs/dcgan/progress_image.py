"""``progress.png``: the first row of every numbered sample grid (samples-epoch-NNN.png), one
under the other with its epoch written beside it, so one picture shows whether the same noise
vectors turn from grey blobs into pictures, or into noise, as training goes on.

Built from the grid files themselves rather than from state kept in memory, so a resumed run
(or a person who deleted a grid) gets the same picture from what is on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw

PROGRESS_NAME = "progress.png"
GRID_NAME = re.compile(r"^samples-epoch-(\d{3,})\.png$")
# More rows than this are thinned out evenly (first and last kept): a long run with a grid
# every epoch would otherwise give a picture too tall to look at.
MAX_ROWS = 24
LABEL_WIDTH = 72


def numbered_grids(out: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every samples-epoch-NNN.png in out, oldest first."""
    found = []
    for path in out.iterdir():
        if match := GRID_NAME.match(path.name):
            found.append((int(match.group(1)), path))
    return sorted(found)


def evenly_thinned(items: list[tuple[int, Path]], limit: int) -> list[tuple[int, Path]]:
    if len(items) <= limit:
        return items
    picks = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in picks]


def write_progress(out: Path, picture_size: int, padding: int = 2) -> Path | None:
    """Stack the first row of each numbered grid in out (grids as save_image_grid draws them:
    pictures of picture_size px with padding around each) into progress.png; None when there
    is no grid yet."""
    chosen = evenly_thinned(numbered_grids(out), MAX_ROWS)
    if not chosen:
        return None
    row_height = picture_size + padding
    strips: list[tuple[int, Image.Image]] = []
    for epoch, path in chosen:
        with Image.open(path) as grid:
            strips.append((epoch, grid.convert("RGB").crop((0, 0, grid.width, row_height))))
    width = LABEL_WIDTH + max(strip.width for _, strip in strips)
    canvas = Image.new("RGB", (width, len(strips) * row_height + padding), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (epoch, strip) in enumerate(strips):
        top = index * row_height
        canvas.paste(strip, (LABEL_WIDTH, top))
        draw.text((6, top + row_height // 2 - 6), f"epoch {epoch}", fill=(0, 0, 0))
    path = out / PROGRESS_NAME
    temp = path.with_name(f".{path.name}.tmp")
    canvas.save(temp, format="PNG")
    temp.replace(path)
    return path
