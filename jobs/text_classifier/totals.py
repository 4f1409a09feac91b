"""Running loss/accuracy sums and the training position, as checkpointable plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Totals:
    """Sums kept as device tensors, so the training loop never syncs per step."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> Totals:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        self.loss_sum += loss.detach().double() * count
        self.correct += correct
        self.seen += count

    def mean_loss(self) -> float:
        return self.loss_sum.item() / max(self.seen, 1)

    def accuracy(self) -> float:
        return self.correct.item() / max(self.seen, 1)

    def to_plain(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.item(),
            "correct": int(self.correct.item()),
            "seen": self.seen,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], device: torch.device) -> Totals:
        totals = cls.zeros(device)
        totals.loss_sum += plain["loss_sum"]
        totals.correct += plain["correct"]
        totals.seen = plain["seen"]
        return totals


@dataclass
class Position:
    """Where training stands: ``batch`` is the next batch index within ``epoch``."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
