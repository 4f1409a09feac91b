"""Spherical linear interpolation between latent points.

Why not a straight line: a DCGAN's noise is N(0, I), whose samples lie near the sphere of
radius sqrt(nz). The midpoint of a straight line between two of them is ~1/sqrt(2) as long,
a region the generator never saw (pictures fade towards grey mid-walk); the great-circle arc
keeps the norm of equal-norm endpoints, and interpolates it smoothly otherwise.
"""

from __future__ import annotations

import torch

# Below this angle sin(omega) is too small to divide by; the arc is then a straight line.
_MIN_ANGLE = 1e-4


def slerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points on the arc from start (t=0) to end (t=1): (D,), (D,), (T,) -> (T, D).

    The endpoints come out exactly: at t=0 the weights are sin(omega)/sin(omega) = 1 and
    sin(0) = 0 (and the other way round at t=1).
    """
    start64, end64, t64 = start.double(), end.double(), t.double().unsqueeze(1)
    cos = torch.dot(start64 / start64.norm(), end64 / end64.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.item() < _MIN_ANGLE:
        points = (1.0 - t64) * start64 + t64 * end64
    else:
        sin = torch.sin(omega)
        points = (torch.sin((1.0 - t64) * omega) / sin) * start64 + (
            torch.sin(t64 * omega) / sin
        ) * end64
    return points.to(start.dtype)


def walk_path(points: torch.Tensor, frames_per_step: int) -> torch.Tensor:
    """(K, D) points -> ((K-1) * F + 1, D): F frames from each point towards the next
    (t = 0, 1/F, ..., (F-1)/F), then the last point itself."""
    t = torch.arange(frames_per_step, dtype=torch.float64) / frames_per_step
    segments = [slerp(points[i], points[i + 1], t) for i in range(len(points) - 1)]
    return torch.cat([*segments, points[-1:]])
