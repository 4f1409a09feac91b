"""IDX parsing (round trip, corruption) and MNIST directory loading."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from jobs.common.errors import DataError
from jobs.common.idx import read_idx
from jobs.mnist_cnn.data import load_digits


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, suffix: str, dtype: type, idx_writer) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 3, 4)) * 100).astype(dtype)
    back = read_idx(idx_writer(tmp_path / f"a-idx3{suffix}", array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_one_dimensional_labels(tmp_path: Path, idx_writer) -> None:
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(idx_writer(tmp_path / "l", labels)), labels)


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda b: b[:2], "only 2 bytes"),
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX data type"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, mangle, expected: str, idx_encoder) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mangle(idx_encoder(np.zeros((2, 28, 28), np.uint8))))
    with pytest.raises(DataError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path, idx_encoder) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_encoder(np.zeros(10, np.uint8)))[:-12])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_dir_with_test_files(tmp_path: Path, gz: bool, fake_mnist) -> None:
    fake_mnist(tmp_path, 30, 12, gz)
    data = load_digits(tmp_path, None, 0.1, seed=0)
    assert (len(data.train_y), len(data.val_y)) == (30, 12)
    assert data.train_x.shape == (30, 28, 28)


def test_mnist_dir_without_test_files_splits_train(tmp_path: Path, fake_mnist) -> None:
    fake_mnist(tmp_path, 50, None, gz=False)
    data = load_digits(tmp_path, None, 0.2, seed=3)
    assert (len(data.train_y), len(data.val_y)) == (40, 10)
    again = load_digits(tmp_path, None, 0.2, seed=3)
    assert data.val_x.equal(again.val_x)  # the split is a pure function of the seed


def test_mnist_dir_mismatched_counts(tmp_path: Path, fake_mnist, idx_writer) -> None:
    fake_mnist(tmp_path, 20, None, gz=False)
    idx_writer(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images but"):
        load_digits(tmp_path, None, 0.1, seed=0)


def test_mnist_dir_missing_labels(tmp_path: Path, fake_mnist) -> None:
    fake_mnist(tmp_path, 20, None, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_digits(tmp_path, None, 0.1, seed=0)
