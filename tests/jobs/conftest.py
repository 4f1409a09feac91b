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
