"""The dataset's size, known before anything is provisioned, against `resources.disk_gb`.

Fetched sources are listed from here with the same code the node runs (remote.fetch.sources) and
the credentials the node would get; a local folder is walked. An archive counts twice: the node's
cache keeps it beside what it unpacks to. A source that cannot be listed from here (a store only
the node can reach, a role only the node has) is left to the node; one that does not exist is
refused now, in one line.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpujobs.errors import NoPlacementError
from gpujobs.remote.fetch.credentials import credentials_for
from gpujobs.remote.fetch.sources import FetchError, list_source
from gpujobs.spec import JobSpec

_HEADROOM = 1.1  # checkpoints, logs and the venv need room too
# Internet egress of the first 10 TB a month, USD per GB (AWS S3 and GCS list prices, 2025);
# reading inside the same cloud and region is free, across its regions about 0.02.
_EGRESS_USD_PER_GB = {"s3": ("aws", 0.09), "gs": ("gcp", 0.12)}


@dataclass(frozen=True)
class SourceSize:
    source: str
    bytes: int | None  # None: not listed from here (the node will say)
    objects: int = 0
    note: str = ""


@dataclass(frozen=True)
class DatasetSize:
    sources: list[SourceSize]

    @property
    def known_bytes(self) -> int:
        return sum(item.bytes or 0 for item in self.sources)

    def describe(self) -> str:
        parts = [
            f"{item.source}: {_size(item.bytes)} in {item.objects} object(s)"
            if item.bytes is not None
            else f"{item.source}: size unknown here ({item.note})"
            for item in self.sources
        ]
        return "; ".join(parts)


def _size(count: int | None) -> str:
    """Bytes as people read them: 1.2 MB, 2.05 GB, 1.8 TB."""
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def dataset_size(spec: JobSpec) -> DatasetSize | None:
    """Each source's size; None when the spec has no dataset."""
    if spec.dataset is None:
        return None
    sizes: list[SourceSize] = []
    if spec.dataset.local_source is not None:
        folder = Path(spec.dataset.local_source)
        files = [p for p in folder.rglob("*") if p.is_file()]
        sizes.append(SourceSize(str(folder), sum(p.stat().st_size for p in files), len(files)))
    fetched = spec.dataset.fetched_sources
    with _credentials(credentials_for(fetched)):
        for source in fetched:
            sizes.append(_listed(source, spec.dataset.sha256, spec.dataset.endpoint_url))
    return DatasetSize(sizes)


def _listed(source: str, sha256: str | None, endpoint_url: str | None) -> SourceSize:
    try:
        objects = list_source(source, sha256=sha256, endpoint_url=endpoint_url)
    except FetchError as exc:
        text = str(exc)
        if "HTTP 404" in text or "expected" in text:
            raise NoPlacementError(f"dataset.source: {text}") from None
        return SourceSize(source, None, note=text)
    if not objects:
        raise NoPlacementError(
            f"dataset.source: {source}: nothing there (an empty or misspelt prefix?)"
        )
    total = sum((o.size or 0) * (2 if o.unpack else 1) for o in objects)
    return SourceSize(source, total, len(objects))


def check_disk(spec: JobSpec, size: DatasetSize | None, source: str = "the spec") -> None:
    """Refuse (exit 2) a dataset larger than the disk the spec asks for, saying what to ask."""
    disk_gb = spec.resources.disk_gb
    if size is None or disk_gb is None:
        return
    need = size.known_bytes
    if need <= disk_gb * 1e9:
        return
    ask = math.ceil(need * _HEADROOM / 1e9 / 10) * 10
    raise NoPlacementError(
        f"{source}: the dataset is {_size(need)} ({size.describe()}), more than "
        f"resources.disk_gb: {disk_gb:g}; ask for disk_gb: {ask} or more"
    )


@contextlib.contextmanager
def _credentials(found: dict[str, str]) -> Iterator[None]:
    """The node's credentials for the listing here; only variables not already set, restored
    after (the planning thread lists alone, before anything starts)."""
    added = {key: value for key, value in found.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def egress_estimate(size: DatasetSize, provider: str) -> tuple[float, str] | None:
    """What reading the dataset's bucket sources from a node of `provider` costs in egress, by
    list price, and how it was reckoned; None when nothing leaves a cloud."""
    usd, parts = 0.0, []
    for item in size.sources:
        scheme = item.source.split("://", 1)[0]
        home = _EGRESS_USD_PER_GB.get(scheme)
        if home is None or item.bytes is None or home[0] == provider:
            continue
        usd += item.bytes / 1e9 * home[1]
        parts.append(f"{item.source} out of {home[0]} at ${home[1]:.2f}/GB")
    return (usd, "; ".join(parts)) if parts else None
