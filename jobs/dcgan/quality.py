"""How good and how varied the generator's pictures are, measured without any pretrained
network (none can be downloaded on the nodes), on the same fixed noise every time.

- ``fid_proxy``: FID's formula on the pictures themselves, average-pooled to 8x8 RGB (192
  numbers each): colour, layout and coarse shape, nothing finer.
- ``fid_conv``: the same formula on the features of a small conv net with fixed, seeded random
  weights (the mean of each channel of three stride-2 layers, 112 numbers): edges, texture and
  noise, which pooled pixels average away. Random conv features are a known stand-in when no
  trained feature net is at hand; coloured noise and smooth shapes differ strongly in them.
- ``diversity``: how far apart the generated pictures are from each other (mean pairwise
  distance at 32x32), divided by the same for the real pictures. About 1: as varied as the data;
  near 0: every noise vector gives the same picture (mode collapse).

Both distances are ``|mu_r - mu_g|^2 + tr(C_r + C_g - 2 (C_r^1/2 C_g C_r^1/2)^1/2)`` between
FEATURE_SAMPLES real pictures (a fixed seeded subset) and as many generated from fixed seeded
noise (generator in eval mode). Lower is better; 0 means matching statistics, not good
pictures. They are comparable only within one data set and image size, never with published
FID numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jobs.dcgan.sampling import generate

FEATURE_SAMPLES = 256
POOLED_SIZE = 8
DIVERSITY_SIZE = 32
FEATURE_WIDTHS = (16, 32, 64)
_NOISE_SEED_OFFSET = 7_919  # keeps this noise apart from the sample-grid noise
# The random feature net is the same for every run and seed, so its figures compare across runs
# on the same data.
_FEATURE_NET_SEED = 1_000_003


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> (N, 3 * 8 * 8) float64."""
    return F.adaptive_avg_pool2d(images.float(), POOLED_SIZE).flatten(1).double()


class RandomConvFeatures(nn.Module):
    """Three stride-2 conv + ReLU layers with fixed He-normal random weights (no training);
    the features are each channel's mean over the picture, of every layer."""

    def __init__(self) -> None:
        super().__init__()
        seeded = torch.Generator().manual_seed(_FEATURE_NET_SEED)
        layers = []
        width = 3
        for out in FEATURE_WIDTHS:
            conv = nn.Conv2d(width, out, 4, 2, 1)
            fan_in = width * 4 * 4
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=seeded))
                conv.weight.mul_((2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            width = out
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, sum(FEATURE_WIDTHS)) float64."""
        x, pooled = images.float(), []
        for layer in self.layers:
            x = F.relu(layer(x))
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between Gaussian fits of two (N, D) feature sets (a 0-d tensor)."""
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr((C_a C_b)^1/2) via the symmetric form C_a^1/2 C_b C_a^1/2, whose eigenvalues are
    # real and non-negative up to rounding (hence the clamp).
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a)
    distance = mean_term + cov_a.trace() + cov_b.trace() - 2 * middle.clamp(min=0).sqrt().sum()
    return distance.clamp(min=0)  # rounding can leave -1e-12 for identical sets


def spread(images: torch.Tensor) -> torch.Tensor:
    """Mean pairwise Euclidean distance between (N, 3, S, S) pictures at 32x32 (0-d float64)."""
    flat = F.adaptive_avg_pool2d(images.float(), DIVERSITY_SIZE).flatten(1).double()
    n = len(flat)
    if n < 2:
        return torch.zeros((), dtype=torch.float64, device=flat.device)
    return torch.cdist(flat, flat).sum() / (n * (n - 1))


@dataclass(frozen=True)
class Quality:
    fid_proxy: float
    fid_conv: float
    diversity: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


class QualityProbe:
    """Holds the real pictures' features and the fixed noise, so each measurement costs one
    generator pass over FEATURE_SAMPLES noise vectors, one pass of the small feature net and
    a few small eigen-decompositions."""

    def __init__(self, real: torch.Tensor, nz: int, seed: int, device: torch.device) -> None:
        """real: uint8 (N, 3, S, S) pictures; a seeded subset of FEATURE_SAMPLES is used."""
        count = min(FEATURE_SAMPLES, len(real))
        pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count]
        pictures = to_signed(real[pick]).to(device)
        self.features = RandomConvFeatures().to(device)
        self.real_pixels = pixel_features(pictures)
        self.real_conv = self.features(pictures)
        self.real_spread = spread(pictures)
        noise_gen = torch.Generator().manual_seed(seed + _NOISE_SEED_OFFSET)
        self.noise = torch.randn(count, nz, generator=noise_gen).to(device)

    def measure_pictures(self, pictures: torch.Tensor) -> Quality:
        """The figures of (N, 3, S, S) pictures in [-1, 1] against the real ones."""
        return Quality(
            fid_proxy=frechet_distance(self.real_pixels, pixel_features(pictures)).item(),
            fid_conv=frechet_distance(self.real_conv, self.features(pictures)).item(),
            diversity=(spread(pictures) / self.real_spread.clamp(min=1e-12)).item(),
        )

    def measure(self, generator: nn.Module) -> Quality:
        """The figures of an eval-mode generator on the fixed noise; calibrate its BatchNorm
        statistics first (see sampling.py)."""
        return self.measure_pictures(generate(generator, self.noise))
