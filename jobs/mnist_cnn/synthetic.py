"""Synthetic MNIST-like digits rendered from fonts, so an offline machine has a learnable set.

Rendering every image with Pillow would be slow, so each (font, digit, stroke width) glyph
is rendered once (at 2x, then box-downsampled for anti-aliasing) into a small bank; every
sample is then a random affine warp of a bank glyph (rotation, zoom, aspect, shear, shift)
done in batches with torch's affine_grid/grid_sample, plus random contrast and noise.
Every random choice comes from one torch.Generator seeded by ``seed``, so the set is a pure
function of (seed, n, the fonts installed).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

SIZE = 28
SUPERSAMPLE = 2
CANVAS = SIZE * SUPERSAMPLE
# MNIST digits fit a 20x20 box inside the 28x28 image; aim the glyph height at that.
GLYPH_HEIGHT = 20 * SUPERSAMPLE
STROKE_WIDTHS = (0, 1, 2, 3)  # at 2x: 0 to 1.5 px of extra thickness at 28x28
FONT_ROOTS = (Path("/usr/share/fonts"),)
FONT_SUFFIXES = (".ttf", ".otf")
DIGITS = "0123456789"

# Ranges of the per-sample warp; wide enough to vary, narrow enough to stay legible.
MAX_ROTATION_DEG = 15.0
ZOOM_RANGE = (0.8, 1.15)
ASPECT_RANGE = (0.85, 1.15)
MAX_SHEAR = 0.25
MAX_SHIFT_PX = 2.5
CONTRAST_RANGE = (0.7, 1.0)
MAX_NOISE_STD = 0.08
_CHUNK = 8192  # bounds temporary memory; results do not depend on it


FontSpec = tuple[str, Path | None]  # (label, path); path None = Pillow's built-in font


def discover_fonts(roots: tuple[Path, ...] = FONT_ROOTS) -> list[FontSpec]:
    """Every TTF/OTF under roots (sorted, for determinism) plus Pillow's built-in font."""
    paths = sorted(
        {
            p
            for root in roots
            if root.is_dir()
            for p in root.rglob("*")
            if p.suffix.lower() in FONT_SUFFIXES and p.is_file()
        }
    )
    return [("pillow-default", None), *((p.name, p) for p in paths)]


def _load_font(spec: FontSpec, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    _, path = spec
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size)


def _render(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, digit: str, stroke: int
) -> np.ndarray:
    """One glyph, bounding-box centred on the 2x canvas, box-downsampled to 28x28 uint8."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), digit, font=font, stroke_width=stroke)
    x = (CANVAS - (right - left)) // 2 - left
    y = (CANVAS - (bottom - top)) // 2 - top
    draw.text((x, y), digit, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.uint8)


def _font_glyphs(spec: FontSpec) -> np.ndarray | None:
    """(strokes, 10, 28, 28) glyphs of one font, or None when it cannot draw digits."""
    try:
        probe = _load_font(spec, 100)
        _, top, _, bottom = probe.getbbox("0")
        if bottom - top <= 0:
            return None
        font = _load_font(spec, max(4, round(100 * GLYPH_HEIGHT / (bottom - top))))
        glyphs = np.stack(
            [np.stack([_render(font, d, stroke) for d in DIGITS]) for stroke in STROKE_WIDTHS]
        )
    except (OSError, ValueError):
        return None  # unreadable font file or one without a usable cmap
    plain = glyphs[0].reshape(len(DIGITS), -1)
    # A font lacking digits draws the same .notdef box (or nothing) for all ten.
    if (plain.max(axis=1) == 0).any() or len({row.tobytes() for row in plain}) < len(DIGITS):
        return None
    return glyphs


@functools.lru_cache(maxsize=4)
def glyph_bank(fonts: tuple[FontSpec, ...]) -> torch.Tensor:
    """(variants, 10, 1, 28, 28) float glyphs in [0, 1]; cached, it is the slow part."""
    per_font = [g for g in map(_font_glyphs, fonts) if g is not None]
    if not per_font:
        raise RuntimeError("no usable font found (not even Pillow's built-in one)")
    bank = np.concatenate(per_font).astype(np.float32) / 255.0
    return torch.from_numpy(bank).unsqueeze(2)


def synthesize_digits(
    n: int, seed: int, fonts: list[FontSpec] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8, n x 28 x 28) and labels (int64), classes balanced to within one."""
    bank = glyph_bank(tuple(fonts if fonts is not None else discover_fonts()))
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=gen)]
    variants = torch.randint(0, bank.shape[0], (n,), generator=gen)
    theta = _random_affines(n, gen)
    contrast = _uniform(n, CONTRAST_RANGE, gen)
    noise_std = _uniform(n, (0.0, MAX_NOISE_STD), gen)
    # One seeded stream for the noise too, drawn once so chunking cannot change the result.
    noise = torch.randn(n, 1, SIZE, SIZE, generator=gen)

    images = torch.empty(n, SIZE, SIZE, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(start + _CHUNK, n))
        source = bank[variants[part], labels[part]]
        grid = F.affine_grid(theta[part], list(source.shape), align_corners=False)
        warped = F.grid_sample(
            source, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        warped = warped * contrast[part].view(-1, 1, 1, 1)
        warped = warped + noise[part] * noise_std[part].view(-1, 1, 1, 1)
        images[part] = (warped.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1)
    return images, labels


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=gen)


def _random_affines(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to source coordinates (affine_grid's convention),
    hence the reciprocal zoom: a source-sampling scale of 1/z shows the glyph z times larger."""
    angle = _uniform(n, (-1.0, 1.0), gen) * math.radians(MAX_ROTATION_DEG)
    zoom = _uniform(n, ZOOM_RANGE, gen)
    aspect = _uniform(n, ASPECT_RANGE, gen)
    shear = _uniform(n, (-MAX_SHEAR, MAX_SHEAR), gen)
    shift = _uniform(2 * n, (-1.0, 1.0), gen).view(n, 2) * (2 * MAX_SHIFT_PX / SIZE)

    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    scale_shear = torch.zeros(n, 2, 2)
    scale_shear[:, 0, 0] = 1 / (zoom * aspect)
    scale_shear[:, 0, 1] = shear
    scale_shear[:, 1, 1] = aspect / zoom
    return torch.cat([rotation @ scale_shear, shift.unsqueeze(2)], dim=2)
