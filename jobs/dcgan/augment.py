"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of what the discriminator sees.

Why: with a few hundred pictures the discriminator soon memorises the real ones and wins every
batch; its gradients then tell the generator nothing and the samples stay noise. Augmenting the
real pictures alone would teach the generator to draw augmented pictures (shifted, cut out).
DiffAugment applies the same kinds of random change to real *and* generated pictures before
the discriminator, and every change is a differentiable tensor operation, so the generator is
trained through it and learns the un-augmented distribution.

The transforms draw from torch's global RNG (on the pictures' device), which every checkpoint
saves: a resumed run draws the same augmentations as an unbroken one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]

# Share of the picture side a translation moves by at most, and the side of a cutout square:
# the values of the DiffAugment paper.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) number per picture, shaped to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def colour(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per picture."""
    x = x + (_per_sample(x) - 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * (_per_sample(x) * 2) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each picture by up to ratio x its side in x and y; the uncovered border is 0
    (mid-grey in [-1, 1])."""
    n, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    # Index into a copy padded by one zero pixel on every side; out-of-range clamps to it.
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    rows = (rows + dy + 1).clamp(0, height + 1).expand(n, height, width)
    cols = (cols + dx + 1).clamp(0, width + 1).expand(n, height, width)
    padded = F.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, height, width)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one square of side ratio x the picture side, centred anywhere (clipped at edges)."""
    n, _, height, width = x.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height + (1 - cut_h % 2), (n, 1, 1), device=x.device) - cut_h // 2
    left = torch.randint(0, width + (1 - cut_w % 2), (n, 1, 1), device=x.device) - cut_w // 2
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS: dict[str, Transform] = {
    "color": colour,
    "translation": translation,
    "cutout": cutout,
}


class DiffAugment:
    """The transforms of a policy (policy.parse_policy), applied in order. An empty policy is
    the identity and draws no random numbers, so a run without augmentation is the run it
    always was."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._transforms = [TRANSFORMS[name] for name in self.names]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self._transforms:
            x = transform(x)
        return x

    def __bool__(self) -> bool:
        return bool(self._transforms)
