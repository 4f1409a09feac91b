"""``generator.pt``: the generator alone, for inference (jobs.latent_walk, your own script),
written beside the full checkpoints each time one is saved. It is a few times smaller than a
checkpoint (no discriminator, no optimizer state), so a job that only draws pictures copies
just this file.

The file holds tensors and plain values only (loads with ``torch.load(weights_only=True)``):
the generator's state dict with its BatchNorm statistics calibrated for eval mode, and the
arguments needed to rebuild the net (nz, ngf, image_size).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from jobs.common.checkpoint import save_atomically

GENERATOR_FILE = "generator.pt"
FORMAT = "jobs.dcgan generator"
FORMAT_VERSION = 1
NET_ARGS = ("nz", "ngf", "image_size")


def save_generator(out: Path, generator: nn.Module, args: argparse.Namespace, step: int) -> Path:
    """Write out/generator.pt atomically (a temp name the checkpoint pull skips, then a
    rename), so a copy taken at any moment is a whole file."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": step,
        "args": {key: getattr(args, key) for key in NET_ARGS},
        "generator": generator.state_dict(),
    }
    return save_atomically(state, out / GENERATOR_FILE)


def generator_parts(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(net args, generator state dict) of a loaded generator.pt or full dcgan checkpoint;
    None when it is neither."""
    if state.get("format") == FORMAT and "generator" in state:
        weights, saved = state["generator"], state.get("args", {})
    else:
        weights, saved = state.get("models", {}).get("generator"), state.get("args", {})
    if not isinstance(weights, dict) or not all(key in saved for key in NET_ARGS):
        return None
    return {key: saved[key] for key in NET_ARGS}, weights
