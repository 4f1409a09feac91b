"""Picture loading (jobs/common/images.load_images) beside the plain Pillow loop it replaced
(open, convert to RGB, resize, crop, no draft decoding), on camera-sized JPEGs, plus the same
folder with a few bad and hidden files mixed in. Target: load_images >= 1.0x plain at every
size (it also checks every file, applies EXIF orientation and composites transparency).

    python tests/bench/image_loading.py [--count 200] [--width 1600] [--sizes 64,224]

Not named bench_*.py: tests/bench/workloads.py imports those as training benches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jobs.common.images import load_images  # noqa: E402
from jobs.common.picture_files import scan_pictures  # noqa: E402


def write_photos(folder: Path, count: int, width: int) -> None:
    """Smooth gradients with mild noise: compress about like photos (not like pure noise)."""
    height = width * 3 // 4
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    for index in range(count):
        base = np.stack([x * 255 // width, y * 255 // height, (x + y + index * 37) % 256], -1)
        pixels = (base + rng.integers(-8, 8, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo-{index:05d}.jpg", quality=88)


def plain_load(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        scale = size / min(image.size)
        width, height = (max(size, round(side * scale)) for side in image.size)
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
        left, top = (width - size) // 2, (height - size) // 2
        out[index] = np.asarray(resized.crop((left, top, left + size, top + size)))
    return out


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--sizes", default="64,224")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        write_photos(folder, options.count, options.width)
        paths = scan_pictures(folder).pictures
        print(f"{len(paths)} JPEGs of {options.width} px wide")
        for size in (int(text) for text in options.sizes.split(",")):
            ours = timed(lambda size=size: load_images(paths, size))
            plain = timed(lambda size=size: plain_load(paths, size))
            print(
                f"{size:>4} px: load_images {len(paths) / ours:7.1f}/s, "
                f"plain {len(paths) / plain:7.1f}/s, {plain / ours:.2f}x"
            )
        # Bad and hidden files cost little: each fails at its header, or is never opened.
        (folder / "broken.jpg").write_bytes(paths[0].read_bytes()[:5000])
        (folder / "notes.jpg").write_text("not a picture")
        (folder / "._photo-00000.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 4000)
        messy = scan_pictures(folder).pictures
        seconds = timed(lambda: load_images(messy, 64))
        print(f"  64 px with 2 bad + 1 hidden: {len(messy) / seconds:7.1f}/s")


if __name__ == "__main__":
    main()
