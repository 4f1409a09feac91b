"""``fid_proxy``: a cheap stand-in for FID, computed without any pretrained network.

FID compares Gaussian fits of Inception features of real and generated pictures. Here the
features are the pictures themselves, average-pooled to 8x8 RGB (192 numbers each), which
keeps colour, layout and coarse shape but nothing finer. The value is the Fréchet distance
``|mu_r - mu_g|^2 + tr(C_r + C_g - 2 (C_r^1/2 C_g C_r^1/2)^1/2)`` between FEATURE_SAMPLES real
pictures (a fixed seeded subset) and as many generated from fixed seeded noise (generator in
eval mode). Lower is better; 0 means matching pixel statistics, not good pictures. Values are
comparable only within one data set and image size, never with published FID numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jobs.dcgan.sampling import generate

FEATURE_SAMPLES = 256
POOLED_SIZE = 8
_NOISE_SEED_OFFSET = 7_919  # keeps this noise apart from the sample-grid noise


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> (N, 3 * 8 * 8) float64."""
    return F.adaptive_avg_pool2d(images.float(), POOLED_SIZE).flatten(1).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between Gaussian fits of two (N, D) feature sets (a 0-d tensor)."""
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr((C_a C_b)^1/2) via the symmetric form C_a^1/2 C_b C_a^1/2, whose eigenvalues are
    # real and non-negative up to rounding (hence the clamp).
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return mean_term + cov_a.trace() + cov_b.trace() - 2 * middle.clamp(min=0).sqrt().sum()


class QualityProbe:
    """Holds the real features and the fixed noise, so each measurement costs one generator
    pass over FEATURE_SAMPLES noise vectors and two small eigen-decompositions."""

    def __init__(self, real: torch.Tensor, nz: int, seed: int, device: torch.device) -> None:
        """real: uint8 (N, 3, S, S) pictures; a seeded subset of FEATURE_SAMPLES is used."""
        count = min(FEATURE_SAMPLES, len(real))
        pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count]
        self.real = pixel_features(real[pick].float().div(127.5).sub(1.0)).to(device)
        noise_gen = torch.Generator().manual_seed(seed + _NOISE_SEED_OFFSET)
        self.noise = torch.randn(count, nz, generator=noise_gen).to(device)

    def measure(self, generator: nn.Module) -> torch.Tensor:
        """The fid_proxy (0-d tensor) of an eval-mode generator; calibrate its BatchNorm
        statistics first (see sampling.py)."""
        return frechet_distance(self.real, pixel_features(generate(generator, self.noise)))
