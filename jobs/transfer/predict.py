"""``python -m jobs.transfer predict``: classify pictures with a training checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.device import select_device
from jobs.common.errors import DataError, UsageError
from jobs.common.images import load_images
from jobs.common.picture_files import IMAGE_SUFFIXES, scan_pictures
from jobs.common.picture_report import SkipReport
from jobs.transfer.data import Normalizer
from jobs.transfer.models import MEMORY_FORMAT, build_model


def predict(args: argparse.Namespace) -> int:
    state = _read_checkpoint(args.checkpoint)
    extra = state["extra"]
    # Names are shown as given (relative to the working folder, or absolute).
    report = SkipReport(Path())
    paths = _expand(args.images, report)
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
        loaded = load_images(chunk, extra["image_size"])
        report.add_failed(loaded.failed)
        if not loaded.kept:
            continue
        with torch.inference_mode():
            probs = torch.softmax(model(normalize(loaded.images.to(device))).float(), dim=1)
        confidence, index = probs.cpu().max(dim=1)
        kept = [chunk[position] for position in loaded.kept]
        for path, conf, label in zip(kept, confidence.tolist(), index.tolist(), strict=True):
            name = names[label] if label < len(names) else f"class{label}"
            results.append({"path": str(path), "class": name, "confidence": round(conf, 6)})
    # Unreadable pictures are left out of the results (stdout stays one result per line, or
    # valid JSON) and named on stderr; only when none is readable is that an error.
    report.check("predict", 1.0, "pass picture files or folders")
    if (warning := report.warning("predict")) is not None:
        print(warning, file=sys.stderr, flush=True)
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


def _expand(items: list[Path], report: SkipReport) -> list[Path]:
    """The pictures of folders (hidden files skipped) and files named (taken as given)."""
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            scan = scan_pictures(item)
            report.add_scan(scan)
            paths += scan.pictures
        elif item.is_file():
            report.pictures += 1
            paths.append(item)
        else:
            raise DataError(f"{item}: no such picture or folder; pass picture files or folders")
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"no pictures found in {', '.join(map(str, items))} ({suffixes})")
    return paths
