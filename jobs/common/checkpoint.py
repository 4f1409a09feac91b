"""Atomic checkpoints named ``ckpt-{step:08d}.pt``, newest-K retention, and the capture /
restore of a complete training state (models, optimizers, schedulers, scaler, RNGs, position);
beside them ``model_weights.pt``, the model's state_dict alone, for inference.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from jobs.common.errors import UsageError
from jobs.common.seeding import capture_rng_state, restore_rng_state

CHECKPOINT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")
_TEMP_PREFIX = ".ckpt-"
_TEMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1
# The model's weights alone: a fraction of a full checkpoint's size (Adam keeps two tensors per
# parameter), for predicting or for loading into another program: model.load_state_dict(...).
WEIGHTS_FILE = "model_weights.pt"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"ckpt-{step:08d}.pt"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in out_dir, oldest first."""
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(out_dir: Path, step: int, state: Mapping[str, Any], keep: int = 3) -> Path:
    """Write atomically (temp file in the same directory, fsync, rename), then prune.

    A crash or preemption mid-write leaves the previous checkpoints intact; the rename is
    atomic because the temp file is on the same filesystem as the target.
    """
    target = save_atomically(dict(state), checkpoint_path(out_dir, step))
    prune_checkpoints(out_dir, keep)
    return target


def save_weights(out_dir: Path, model: torch.nn.Module) -> Path:
    """model_weights.pt: `model`'s state_dict and nothing else (no optimizer, RNG or position,
    so it cannot resume a run), replaced atomically at each save that writes it."""
    return save_atomically(model.state_dict(), out_dir / WEIGHTS_FILE)


def save_atomically(payload: Any, target: Path) -> Path:
    """torch.save to a temp file beside `target`, fsynced, then renamed over it: a reader (or a
    pull) sees the old file or the new one, never half of one."""
    out_dir = target.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=out_dir, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_dir(out_dir)
    return target


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; also drop temp files left by an interrupted save
    (only one process writes to an out dir, so no temp file is in use at this point)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    for _, path in list_checkpoints(out_dir)[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for path in out_dir.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load onto CPU; state dicts are moved to the right device by load_state_dict."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_latest_checkpoint(out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that loads; an unreadable one (e.g. a damaged disk) is reported and
    the next older one is tried, so one bad file does not lose the whole run."""
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path)
        except Exception as exc:  # any unpickling/IO failure means "try the older one"
            print(
                f"warning: skipping unreadable checkpoint {path}: {exc}",
                file=sys.stderr,
                flush=True,
            )
    return None


def args_to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """CLI args as plain values (Path -> str) so they survive weights_only loading."""
    plain: dict[str, Any] = {}
    for key, value in vars(args).items():
        if value is None or isinstance(value, bool | int | float | str):
            plain[key] = value
        else:
            plain[key] = str(value)
    return plain


def check_resume_compatible(
    saved_args: Mapping[str, Any], args: argparse.Namespace, keys: Iterable[str]
) -> None:
    """Refuse to resume when an argument that shapes the data order or optimizer changed,
    since the run would silently stop being the one that was checkpointed."""
    current = args_to_dict(args)
    for key in keys:
        if key in saved_args and saved_args[key] != current.get(key):
            flag = "--" + key.replace("_", "-")
            raise UsageError(
                f"{flag} {current.get(key)} differs from the checkpoint's {saved_args[key]} in "
                f"{args.out}; resume with {flag} {saved_args[key]} or use a new --out"
            )


def capture_training_state(
    *,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    epoch: int,
    step: int,
    args: argparse.Namespace,
    schedulers: Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to continue exactly: named so workloads with several models (e.g.
    a GAN's generator and discriminator) use the same format."""
    return {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "step": step,
        "models": {name: model.state_dict() for name, model in models.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "schedulers": {name: s.state_dict() for name, s in (schedulers or {}).items()},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": capture_rng_state(),
        "args": args_to_dict(args),
        "saved_at": time.time(),
        "extra": dict(extra or {}),
    }


def restore_training_state(
    state: Mapping[str, Any],
    *,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Inverse of capture_training_state (epoch/step/extra are read by the caller)."""
    for name, model in models.items():
        model.load_state_dict(state["models"][name])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for name, scheduler in (schedulers or {}).items():
        scheduler.load_state_dict(state["schedulers"][name])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])


class SaveSchedule:
    """Time-based checkpointing: ``due()`` turns true every ``minutes`` since the last save."""

    def __init__(self, minutes: float) -> None:
        self.interval_s = minutes * 60.0
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def mark_saved(self) -> None:
        self._last = time.monotonic()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
