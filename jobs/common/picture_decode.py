"""One picture file -> size x size RGB pixels, or the reason it cannot be used.

Everything about a file's content is found here, in the one pass that decodes it:

- empty, not a picture (a text file named .jpg), truncated, corrupt, too large (Pillow's
  decompression-bomb guard) -> `BadPicture` with a short reason. Truncation shows only when
  the pixels are decoded (`Image.open` reads the header alone), so the file is fully loaded
  inside the check; `ImageFile.LOAD_TRUNCATED_IMAGES` is left off on purpose: with it a cut
  JPEG loads with its missing part grey, and would be trained on;
- EXIF orientation is applied (phones store pictures sideways plus a rotation tag);
- transparency (RGBA, LA, palette or greyscale with a transparent colour) is composited on
  a background instead of dropped, which turns transparent areas black (often their stored
  colour); greyscale, 1-bit, palette and CMYK become RGB; 16-bit greyscale is scaled down
  to 8 bits, where Pillow's own conversion clips it to white;
- animated GIF/PNG/WebP: the first frame.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)
TRUNCATED = "truncated"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
# Greyscale modes holding 0..65535: a 16-bit greyscale PNG opens as "I;16" in recent Pillow and
# as "I" (32-bit int) in older ones.
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class BadPicture(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def decode_picture(path: Path, size: int, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """(size, size, 3) uint8: upright, RGB, resized on the short side and centre-cropped."""
    try:
        with Image.open(path) as image:
            # JPEG only (a no-op for other formats): decode at 1/2, 1/4 or 1/8 scale while
            # both sides stay >= size, several times faster for camera pictures. The size is
            # square, so a later EXIF rotation cannot make a side too short.
            image.draft("RGB", (size, size))
            image.load()  # decodes every pixel: a truncated or corrupt file fails here
            upright(image)
            picture = _resize_center_crop(to_rgb(image, background), size)
            return np.asarray(picture)
    # A damaged file can make Pillow's decoders raise almost anything (OSError, SyntaxError,
    # ValueError, struct.error, zlib.error, EOFError, ...), and every call in this block only
    # reads the file or transforms its pixels: any exception here is about the file.
    except Exception as exc:
        raise BadPicture(path, reason_for(exc, path)) from None


def upright(image: Image.Image) -> None:
    """Apply the EXIF orientation in place (a loaded image)."""
    # A malformed EXIF block says nothing about the pixels: they are kept as stored.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT:
        # Pillow's convert("L"/"RGB") clips these at 255 rather than scaling: nearly white.
        grey = np.asarray(image).clip(0, 65535) // 257
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def reason_for(exc: Exception, path: Path) -> str:
    """A few words on why a picture cannot be used, for the skip line and errors."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels)"
    if isinstance(exc, MemoryError):
        return "too large for memory"
    if isinstance(exc, FileNotFoundError):
        return "missing (a broken link?)"
    if isinstance(exc, PermissionError):
        return "no read permission"
    if isinstance(exc, UnidentifiedImageError):
        try:
            return EMPTY if path.stat().st_size == 0 else NOT_AN_IMAGE
        except OSError:
            return NOT_AN_IMAGE
    if "truncated" in str(exc):  # Pillow's word when the data ends early, in every format
        return TRUNCATED
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"corrupt ({exc.__class__.__name__}{': ' + detail[:60] if detail else ''})"


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))
