"""Which classes a classifier gets right: the validation confusion matrix (rows the true class,
columns the predicted one), counted on the device while validating, and per-class accuracy
from it, written each epoch as ``per_class.json`` and ``per_class.csv`` (the last epoch's only:
the files are replaced). A study that down-weights a class finds it here, not in the mean."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

PER_CLASS_JSON = "per_class.json"
PER_CLASS_CSV = "per_class.csv"
Matrix = list[list[int]]  # [true class][predicted class] -> count


class ConfusionCounter:
    """Counts (true, predicted) pairs in one device tensor: no host sync per batch."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = logits.argmax(1)
        pairs = targets.long() * self.num_classes + predicted
        self.counts += torch.bincount(pairs, minlength=self.num_classes**2)

    def matrix(self) -> Matrix:
        return self.counts.view(self.num_classes, self.num_classes).tolist()


@dataclass(frozen=True)
class ClassAccuracy:
    """One class on the validation split: `count` samples, `correct` of them predicted as
    this class (accuracy = recall), and how often the model predicted it at all."""

    name: str
    count: int
    correct: int
    predicted: int

    @property
    def accuracy(self) -> float | None:
        """None for a class with no validation samples: nothing to be right about."""
        return self.correct / self.count if self.count else None


def class_accuracies(matrix: Matrix, names: Sequence[str]) -> list[ClassAccuracy]:
    """Per class, in class-id order, from a square confusion matrix."""
    if len(matrix) != len(names) or any(len(row) != len(names) for row in matrix):
        shape = f"{len(matrix)} x {len(matrix[0]) if matrix else 0}"
        raise ValueError(f"{len(names)} class names for a {shape} confusion matrix")
    return [
        ClassAccuracy(
            name=name,
            count=sum(matrix[index]),
            correct=matrix[index][index],
            predicted=sum(row[index] for row in matrix),
        )
        for index, name in enumerate(names)
    ]


def padded_names(names: Sequence[str], num_classes: int) -> list[str]:
    """The data's class names, plus a name for each output the data has no class for (a
    head made wider with --num-classes): predictions can still land there."""
    return [*names, *(f"(output {index})" for index in range(len(names), num_classes))]


@dataclass(frozen=True)
class ClassReport:
    """What per_class.json holds: the matrix and per-class figures of one epoch's validation."""

    epoch: int
    step: int
    names: list[str]
    matrix: Matrix

    @property
    def classes(self) -> list[ClassAccuracy]:
        return class_accuracies(self.matrix, self.names)

    @property
    def total(self) -> int:
        return sum(sum(row) for row in self.matrix)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": "val",
            "epoch": self.epoch,
            "step": self.step,
            "class_names": self.names,
            "confusion": self.matrix,
            "per_class": [{**asdict(item), "accuracy": item.accuracy} for item in self.classes],
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["class", "count", "correct", "accuracy", "predicted"])
        for item in self.classes:
            accuracy = "" if item.accuracy is None else f"{item.accuracy:.6f}"
            writer.writerow([item.name, item.count, item.correct, accuracy, item.predicted])
        return buffer.getvalue()


def write_class_report(out_dir: Path, report: ClassReport) -> tuple[Path, Path]:
    """per_class.json and per_class.csv, each replaced atomically."""
    json_path = _replace(out_dir / PER_CLASS_JSON, json.dumps(report.to_json(), indent=1) + "\n")
    csv_path = _replace(out_dir / PER_CLASS_CSV, report.to_csv())
    return json_path, csv_path


def read_class_report(out_dir: Path) -> ClassReport | None:
    """The last epoch's report, or None where there is none (or it is unreadable)."""
    try:
        data = json.loads((out_dir / PER_CLASS_JSON).read_text(encoding="utf-8"))
        return ClassReport(
            epoch=int(data["epoch"]),
            step=int(data["step"]),
            names=[str(name) for name in data["class_names"]],
            matrix=[[int(count) for count in row] for row in data["confusion"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _replace(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)
    return path
