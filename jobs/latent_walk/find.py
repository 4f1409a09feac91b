"""Finding the dcgan checkpoint to walk through. No torch import here, so a missing
checkpoint is reported in milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

# Same naming as jobs.common.checkpoint (which imports torch, hence not imported here).
CHECKPOINT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")


def newest_checkpoint(root: Path) -> Path | None:
    """The most recently written ``ckpt-*.pt`` anywhere below root (ties: highest step).

    By modification time rather than step, because root may hold several runs whose step
    counts say nothing about which is newer.
    """
    if not root.is_dir():
        return None
    found = [
        (path.stat().st_mtime, int(match.group(1)), str(path), path)
        for path in root.rglob("ckpt-*.pt")
        if (match := CHECKPOINT_RE.match(path.name)) and path.is_file()
    ]
    return max(found)[3] if found else None
