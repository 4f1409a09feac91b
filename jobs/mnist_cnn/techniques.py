"""The training techniques the study compares, each behind a flag, each resumable exactly:

- weighted data sampling (`--class-weights`): WeightedRandomSampler with per-class weights;
- learning-rate schedules (`--lr-schedule step|cosine|onecycle`), stepped once per batch;
- weight initialisation (`--init kaiming|xavier|orthogonal|torch`);
- data augmentation (`--augment`): small random shifts and rotations of each batch.

Every random choice is drawn from a generator seeded by (seed, epoch[, batch]), so a resumed run
redraws exactly what an unbroken run drew, with no sampler state to save.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import WeightedRandomSampler

from jobs.common.errors import UsageError
from jobs.mnist_cnn.cli import INITS, LR_SCHEDULES, NUM_CLASSES

_SEED_STRIDE = 1_000_003  # a large odd stride keeps (seed, epoch) pairs from colliding


def sample_weights(labels: torch.Tensor, class_weights: list[float] | str) -> torch.Tensor:
    """One weight per training sample; `balanced` weighs each class by 1/frequency."""
    counts = torch.bincount(labels, minlength=NUM_CLASSES).double()
    if class_weights == "balanced":
        per_class = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    else:
        per_class = torch.tensor(class_weights, dtype=torch.float64)
    return per_class[labels]


def weighted_order(weights: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """An epoch of len(weights) indices drawn with replacement by WeightedRandomSampler."""
    generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch)
    sampler = WeightedRandomSampler(
        weights, num_samples=len(weights), replacement=True, generator=generator
    )
    return torch.tensor(list(iter(sampler)), dtype=torch.int64)


def make_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    lr: float,
    steps_per_epoch: int,
    epochs: int,
    step_epochs: int,
    gamma: float,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch schedule over the whole run (`epochs` x `steps_per_epoch` steps)."""
    total = max(epochs * steps_per_epoch, 1)
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(step_epochs * steps_per_epoch, 1), gamma=gamma
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    raise UsageError(f"--lr-schedule {name}: choose one of {', '.join(LR_SCHEDULES)}")


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear layers; `torch` keeps PyTorch's own default init."""
    if scheme == "torch":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.reset_parameters()
        return
    if scheme == "kaiming":
        model.reset_parameters()  # the base case's init, with its reasons (model.py)
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(module.weight)
            else:
                raise UsageError(f"--init {scheme}: choose one of {', '.join(INITS)}")
            nn.init.zeros_(module.bias)


def augment(
    x: torch.Tensor,
    seed: int,
    epoch: int,
    batch: int,
    *,
    max_shift: float = 2.0,
    max_degrees: float = 10.0,
) -> torch.Tensor:
    """Each picture shifted by up to `max_shift` pixels and rotated by up to `max_degrees`,
    one affine warp for the whole batch (cheap next to the model on CPU and GPU)."""
    generator = torch.Generator().manual_seed((seed * _SEED_STRIDE + epoch) * _SEED_STRIDE + batch)
    count, _, height, width = x.shape
    draws = torch.rand((count, 3), generator=generator) * 2 - 1
    angle = draws[:, 0] * math.radians(max_degrees)
    shift_x = draws[:, 1] * (2 * max_shift / width)  # affine_grid works in [-1, 1] units
    shift_y = draws[:, 2] * (2 * max_shift / height)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    ).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # The normalised background is not 0, so pad with the border rather than zeros.
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)
