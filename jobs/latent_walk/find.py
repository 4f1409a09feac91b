"""Finding the dcgan generator to walk through. No torch import here, so a missing one is
reported in milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

# Same naming as jobs.common.checkpoint and jobs.dcgan.export (which import torch, hence not
# imported here).
CHECKPOINT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")
GENERATOR_FILE = "generator.pt"


def newest_checkpoint(root: Path) -> Path | None:
    """The most recently written ``generator.pt`` anywhere below root (the generator alone,
    which dcgan writes beside its checkpoints); else the newest ``ckpt-*.pt`` (ties: highest
    step), for runs from before generator.pt existed.

    By modification time rather than step, because root may hold several runs whose step
    counts say nothing about which is newer.
    """
    if not root.is_dir():
        return None
    generators = [
        (path.stat().st_mtime, str(path), path)
        for path in root.rglob(GENERATOR_FILE)
        if path.is_file()
    ]
    if generators:
        return max(generators)[2]
    found = [
        (path.stat().st_mtime, int(match.group(1)), str(path), path)
        for path in root.rglob("ckpt-*.pt")
        if (match := CHECKPOINT_RE.match(path.name)) and path.is_file()
    ]
    return max(found)[3] if found else None
