"""What every picture a workload draws with Pillow needs (the nodes have no matplotlib): a
legible font, text turned sideways for a vertical axis, text centred on a point, and an atomic
PNG write, so a person (or a pull of the run folder) never sees half a file."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Colour = tuple[int, int, int]
INK: Colour = (0, 0, 0)
FAINT: Colour = (225, 225, 225)


@cache
def font(size: int = 13) -> Font:
    """Pillow's bundled TrueType face at `size` px; its small bitmap face where Pillow was built
    without FreeType (the text is then smaller, but still there)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


def text_size(text: str, face: Font) -> tuple[int, int]:
    left, top, right, bottom = face.getbbox(text)
    return int(right - left), int(bottom - top)


def centred_text(
    draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, face: Font, fill: Colour = INK
) -> None:
    """`text` with its middle at `at`."""
    draw.text(at, text, fill=fill, font=face, anchor="mm")


def vertical_text(
    image: Image.Image, at: tuple[float, float], text: str, face: Font, fill: Colour = INK
) -> None:
    """`text` read bottom to top (a y axis's label), its middle at `at`."""
    width, height = text_size(text, face)
    if not text or width == 0:
        return
    pad = 4  # room for descenders and the bbox's offset
    strip = Image.new("L", (width + 2 * pad, height + 2 * pad), 0)
    ImageDraw.Draw(strip).text(
        (pad + width / 2, pad + height / 2), text, fill=255, font=face, anchor="mm"
    )
    turned = strip.rotate(90, expand=True)
    ink = Image.new("RGB", turned.size, fill)
    image.paste(ink, (round(at[0] - turned.width / 2), round(at[1] - turned.height / 2)), turned)


def save_png(image: Image.Image, path: Path) -> Path:
    """Write beside the target and rename over it: a reader sees the old or the new picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    image.save(temp, format="PNG")
    temp.replace(path)
    return path
