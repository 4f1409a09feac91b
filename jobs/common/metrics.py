"""Metrics as JSON lines in ``<out>/metrics.jsonl``: one object per line, flushed at once so
a watcher (or a preempted run's leftovers) always sees complete lines."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends rows; a resumed run continues the same file."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / METRICS_FILE
        self._file = self.path.open("a", encoding="utf-8")

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
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        return row

    def close(self) -> None:
        self._file.close()

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
