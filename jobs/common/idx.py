"""Reader for the IDX format (MNIST and friends): magic ``00 00 <dtype> <ndim>``, then ndim
big-endian uint32 dimensions, then the big-endian data. ``.gz`` files are decompressed."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from jobs.common.errors import DataError

# dtype code -> big-endian numpy dtype, from the format's specification.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file into a native-endian array; any malformation raises DataError."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(
            f"{path}: not an IDX file (only {len(raw)} bytes); re-download it or remove it"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (bad magic {raw[:4].hex()}); "
            "re-download it (a .gz file must keep its .gz suffix)"
        )
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type 0x{dtype_code:02x}; re-download it")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; re-download it")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header; re-download it")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[dtype_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {kind} (header {dims} needs {expected} data bytes, "
            f"found {actual}); re-download it"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a cut-off .gz raises EOFError.
        raise DataError(f"{path}: cannot read ({exc}); re-download it") from None
