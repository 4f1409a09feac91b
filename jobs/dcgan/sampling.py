"""Generating pictures from a trained generator: eval mode, with "standing" BatchNorm
statistics so that a picture depends only on its own noise vector and looks like training.

Why: training only ever runs the generator in train mode (batch statistics), while the
running averages BatchNorm keeps for eval mode lag behind. Early in a run they still hold
their initial values, which are far too large for DCGAN's N(0, 0.02) weights, and every
picture comes out flat grey. calibrate_batchnorm replaces them with the exact average over a
fixed noise batch. Train-mode forwards never read these buffers, so training is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

CALIBRATION_SAMPLES = 128  # x every spatial position: plenty for per-channel statistics
CHUNK = 128  # bounds memory at 128 px; results do not depend on it in eval mode
_CALIBRATION_SEED_OFFSET = 15_485_863  # keeps this noise apart from other fixed noise


def calibration_noise(nz: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + _CALIBRATION_SEED_OFFSET)
    return torch.randn(CALIBRATION_SAMPLES, nz, generator=gen)


@torch.no_grad()
def calibrate_batchnorm(generator: nn.Module, noise: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to the cumulative average over ``noise``
    (in CHUNK-sized train-mode passes); weights and optimizer state are untouched."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    was_training = generator.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None = cumulative average, so every chunk counts equally
    generator.train()
    for chunk in noise.split(CHUNK):
        generator(chunk)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    generator.train(was_training)


@torch.no_grad()
def generate(generator: nn.Module, noise: torch.Tensor) -> torch.Tensor:
    """(N, nz) noise -> (N, 3, S, S) float pictures in [-1, 1], eval mode, chunked."""
    was_training = generator.training
    generator.eval()
    pictures = torch.cat([generator(chunk).float() for chunk in noise.split(CHUNK)])
    generator.train(was_training)
    return pictures
