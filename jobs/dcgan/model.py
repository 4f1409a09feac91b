"""The DCGAN generator and discriminator of Radford et al. (2016), for 64 or 128 px pictures.

Generator: a 4x4 projection of the noise, then stride-2 transposed convs that double the size
and halve the width (BatchNorm + ReLU), ending in a transposed conv to RGB and tanh.
Discriminator: the mirror image, stride-2 convs with LeakyReLU 0.2 (BatchNorm on all but the
first), ending in a 4x4 conv to one logit. Each doubling of the picture size adds one block.
With ``spectral_norm`` (Miyato et al., 2018) every conv of the discriminator is divided by its
largest singular value instead, and BatchNorm is left out: the discriminator can then change
only so fast, which keeps it from overpowering the generator on a small picture set.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IMAGE_SIZES = (64, 128)


def middle_blocks(image_size: int) -> int:
    """Stride-2 blocks between the 4x4 stage and the RGB layer: 64 px -> 3, 128 px -> 4.

    Any power of two >= 16 works (e.g. 32 px for quick experiments); the CLI offers 64 and 128.
    """
    blocks = round(math.log2(image_size)) - 3
    if image_size != 2 ** (blocks + 3) or blocks < 1:
        raise ValueError(f"image size must be a power of two >= 16, got {image_size}")
    return blocks


class Generator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.nz = nz
        blocks = middle_blocks(image_size)
        width = ngf * 2**blocks
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(blocks):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, nz) or (N, nz, 1, 1) noise -> (N, 3, S, S) pictures in [-1, 1]."""
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, image_size: int = 64, spectral_norm: bool = False) -> None:
        super().__init__()
        blocks = middle_blocks(image_size)
        # No BatchNorm on the first layer: the paper found it destabilises training there.
        layers: list[nn.Module] = [
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for _ in range(blocks):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=False))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        init_weights(self)
        if spectral_norm:
            # After the init: the parametrization keeps the initialised weight as its original.
            for layer in self.net:
                if isinstance(layer, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pictures in [-1, 1] -> (N,) logits (real > 0)."""
        return self.net(x).view(-1)


def init_weights(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
