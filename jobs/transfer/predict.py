"""``python -m jobs.transfer predict``: classify pictures with a training checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.device import select_device
from jobs.common.errors import DataError, UsageError
from jobs.common.images import IMAGE_SUFFIXES, find_images, load_images
from jobs.transfer.data import Normalizer
from jobs.transfer.models import MEMORY_FORMAT, build_model


def predict(args: argparse.Namespace) -> int:
    state = _read_checkpoint(args.checkpoint)
    extra = state["extra"]
    paths = _expand(args.images)
    device = select_device(args.device)
    model = build_model(extra["arch"], extra["num_classes"])
    model.load_state_dict(state["models"]["model"])
    model.to(device=device, memory_format=MEMORY_FORMAT).eval()
    normalize = Normalizer(device)
    names: list[str] = list(extra["class_names"])
    results: list[dict[str, Any]] = []
    for first in range(0, len(paths), args.batch_size):
        chunk = paths[first : first + args.batch_size]
        # The same resize + centre crop as training's validation pictures.
        images = load_images(chunk, extra["image_size"]).to(device)
        with torch.inference_mode():
            probs = torch.softmax(model(normalize(images)).float(), dim=1).cpu()
        confidence, index = probs.max(dim=1)
        for path, conf, label in zip(chunk, confidence.tolist(), index.tolist(), strict=True):
            name = names[label] if label < len(names) else f"class{label}"
            results.append({"path": str(path), "class": name, "confidence": round(conf, 6)})
    if args.json:
        print(json.dumps(results, indent=2), flush=True)
    else:
        for row in results:
            print(f"{row['path']}  {row['class']}  {row['confidence']:.4f}", flush=True)
    return 0


def _read_checkpoint(path: Path) -> dict[str, Any]:
    file = latest_checkpoint(path) if path.is_dir() else path
    if file is None:
        raise UsageError(f"--checkpoint {path}: the folder holds no ckpt-*.pt; pass a checkpoint")
    try:
        state = load_checkpoint(file)
    except Exception as exc:  # any unpickling/IO failure: not a checkpoint we can use
        raise UsageError(
            f"--checkpoint {file}: not a readable checkpoint ({exc.__class__.__name__})"
        ) from None
    if "arch" not in state.get("extra", {}):
        raise UsageError(
            f"--checkpoint {file}: not a checkpoint of `python -m jobs.transfer`; pass one"
        )
    return state


def _expand(items: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            paths += find_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item}: no such picture or folder; pass picture files or folders")
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"no pictures found in {', '.join(map(str, items))} ({suffixes})")
    return paths
