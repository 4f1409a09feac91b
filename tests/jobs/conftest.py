"""Fixtures for the workload tests. Helpers are handed out as fixtures rather than imported,
so the tests work under any pytest import mode and beside other conftest.py files."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

IDX_DTYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def _module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _module_env() -> dict[str, str]:
    """An environment in which ``python -m jobs...`` imports this checkout's ``jobs``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def run_module() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m <module> <args>`` to completion, capturing text output."""

    def run(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _module_command(module, *args),
            cwd=REPO_ROOT,
            env=_module_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def spawn_module() -> Callable[..., subprocess.Popen[str]]:
    """Start ``python -m <module> <args>`` with piped text stdout/stderr; killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(module: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            _module_command(module, *args),
            cwd=REPO_ROOT,
            env=_module_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def idx_bytes(array: np.ndarray) -> bytes:
    """A deliberately independent IDX writer: header, big-endian dims, big-endian data."""
    header = struct.pack(">BBBB", 0, 0, IDX_DTYPE_CODES[array.dtype], array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_fake_mnist(directory: Path, n_train: int, n_test: int | None, gz: bool) -> None:
    """Random MNIST-shaped IDX files; no t10k files when n_test is None."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    splits = [("train", n_train)] + ([("t10k", n_test)] if n_test is not None else [])
    for prefix, n in splits:
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(
            directory / f"{prefix}-labels-idx1-ubyte{suffix}",
            rng.integers(0, 10, n, dtype=np.uint8),
        )


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray], Path]:
    return write_idx


@pytest.fixture
def idx_encoder() -> Callable[[np.ndarray], bytes]:
    return idx_bytes


@pytest.fixture
def fake_mnist() -> Callable[[Path, int, int | None, bool], None]:
    return write_fake_mnist


# --- messy picture folders ---------------------------------------------------------------------

# The first bytes of a real AppleDouble file (the `._name` twin macOS writes beside a file on a
# foreign disk or into a zip): magic 0x00051607, version 2, "Mac OS X" filler, two entries.
APPLE_DOUBLE = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"
    b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x0e\xb0"
    b"\x00\x00\x00\x02\x00\x00\x0e\xe2\x00\x00\x01\x1e" + b"\x00" * 64 + b"ATTR"
)
DS_STORE = b"\x00\x00\x00\x01Bud1" + b"\x00" * 120


def noise_picture(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(40, 200, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A real JPEG with the second half of its bytes gone, as an interrupted copy leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_picture((96, 64), seed).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """The unreadable and hidden files of a real folder; returns name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated_jpeg(folder / "broken.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("cover art: ask the label for the 3000 px versions\n")
    (folder / "._cover.jpg").write_bytes(APPLE_DOUBLE)
    (folder / ".DS_Store").write_bytes(DS_STORE)
    macosx = folder / "__MACOSX"
    macosx.mkdir()
    (macosx / "._cover.jpg").write_bytes(APPLE_DOUBLE)
    # A real picture in a hidden folder: a stale notebook copy, never to be trained on.
    checkpoints = folder / ".ipynb_checkpoints"
    checkpoints.mkdir()
    noise_picture((40, 40), 99).save(checkpoints / "cover-checkpoint.png")
    return {
        "broken.jpg": "truncated",
        "empty.png": "empty file",
        "notes.jpg": "not an image",
        "._cover.jpg": "hidden",
        ".DS_Store": "hidden",
        "__MACOSX/": "hidden",
        ".ipynb_checkpoints/": "hidden",
    }


def write_odd_pictures(folder: Path) -> dict[str, Path]:
    """Readable pictures that need care: transparency, EXIF rotation, greyscale, palette,
    16-bit, CMYK, animation. Returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    # Left half fully transparent, stored as black (what most tools write there); right red.
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, 16:] = (220, 30, 30, 255)
    paths["transparent"] = folder / "transparent.png"
    Image.fromarray(rgba, "RGBA").save(paths["transparent"])
    # Stored 64 wide x 32 high, left half red, right half blue, with orientation 6 ("rotate
    # 90 degrees clockwise to view"): upright it is 32 x 64, red on top, blue below.
    sideways = np.zeros((32, 64, 3), dtype=np.uint8)
    sideways[:, :32] = (230, 20, 20)
    sideways[:, 32:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    paths["rotated"] = folder / "rotated.jpg"
    Image.fromarray(sideways, "RGB").save(paths["rotated"], exif=exif, quality=95)
    paths["grey"] = folder / "grey.png"
    Image.new("L", (30, 20), 90).save(paths["grey"])
    paths["palette"] = folder / "palette.png"
    Image.new("RGB", (24, 24), (20, 160, 40)).convert("P").save(paths["palette"])
    # 16-bit greyscale at half scale: 0x8080 / 257 = 128.
    paths["sixteen"] = folder / "sixteen.png"
    Image.fromarray(np.full((20, 20), 0x8080, dtype=np.uint16)).save(paths["sixteen"])
    paths["cmyk"] = folder / "cmyk.jpg"
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(paths["cmyk"], quality=95)  # red
    # Two frames, red then blue: the first is the picture.
    paths["animated"] = folder / "animated.gif"
    red, blue = Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))
    red.save(paths["animated"], save_all=True, append_images=[blue], duration=100, loop=0)
    return paths


def write_good_pictures(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"cover-{index:03d}.{('jpg', 'png')[index % 2]}"
        noise_picture((48 + 8 * (index % 3), 40 + 4 * (index % 5)), seed + index).save(path)
        paths.append(path)
    return paths


class MessyPictures:
    """Helpers to build picture folders as people have them (see write_bad_files)."""

    bad_files = staticmethod(write_bad_files)
    odd_pictures = staticmethod(write_odd_pictures)
    good_pictures = staticmethod(write_good_pictures)
    truncated_jpeg = staticmethod(truncated_jpeg)


@pytest.fixture
def messy() -> type[MessyPictures]:
    return MessyPictures
