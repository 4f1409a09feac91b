"""Metrics as JSON lines in ``<out>/metrics.jsonl``: one object per line, flushed at once so
a watcher (or a preempted run's leftovers) always sees complete lines. When the `tensorboard`
package is installed, every numeric field is also written as a TensorBoard scalar
(``<split>/<field>``) under ``<out>/tensorboard``, so `tensorboard --logdir runs/` works."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = frozenset({"step", "epoch", "split", "time"})


def _summary_writer(folder: Path) -> Any:
    """A TensorBoard SummaryWriter, or None where the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def rewind_metrics(out_dir: Path, step: int) -> int:
    """Drop the rows past `step` (the checkpoint a run resumes from): the resumed run logs
    those steps again, and a row must not appear twice. Returns how many were dropped."""
    path = out_dir / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) < len(lines):
        temp = path.with_suffix(".tmp")
        temp.write_text("".join(kept), encoding="utf-8")
        temp.replace(path)
    return len(lines) - len(kept)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line (the node died mid-write): dropped with the rest


class MetricsWriter:
    """Appends rows; a resumed run continues the same file. A disabled writer (every rank but
    0 of a distributed run) builds its rows but writes nothing and creates no folder: rank 0
    logs the group's numbers once, and the other ranks' --out stays untouched."""

    def __init__(self, out_dir: Path, *, tensorboard: bool = True, enabled: bool = True) -> None:
        self.path = out_dir / METRICS_FILE
        self._file: TextIO | None = None
        self._board: Any = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._board = _summary_writer(out_dir / TENSORBOARD_DIR) if tensorboard else None

    def log(
        self,
        *,
        step: int,
        epoch: int,
        split: str,
        loss: float | None = None,
        accuracy: float | None = None,
        lr: float | None = None,
        samples_per_s: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "split": split,
            "loss": _clean(loss),
            "accuracy": _clean(accuracy),
            "lr": _clean(lr),
            "samples_per_s": _clean(samples_per_s),
            "time": time.time(),
            **extra,
        }
        if self._file is None:
            return row
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._board is not None:
            for key, value in row.items():
                if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                    self._board.add_scalar(f"{split}/{key}", value, step)
        return row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._board is not None:
            self._board.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _clean(value: float | None) -> float | None:
    # JSON has no NaN/Infinity; a diverged loss is written as null rather than invalid JSON.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / METRICS_FILE
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
