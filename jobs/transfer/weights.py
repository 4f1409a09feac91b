"""Pretrained weights: a local ``.pth`` file or an http(s) URL fetched once into a cache, an
optional sha256 check, and loading of the backbone with every key and shape checked.

The file is read with ``torch.load(weights_only=True)``, so a weights file from the internet
cannot run code. torchvision's files (e.g. resnet18-f37072fd.pth) are plain state dicts;
files that wrap one (``{"state_dict": ...}``, ``{"model": ...}``, a checkpoint of this
workload) and ``module.`` prefixes from DataParallel are unwrapped too.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jobs.common.errors import UsageError
from jobs.transfer.models import ARCHS, build_model, is_head_key

_CHUNK = 1 << 20
_PROGRESS_EVERY_S = 5.0
_SHOWN_KEYS = 4


def default_cache_dir() -> Path:
    """torchvision's own cache folder, so weights a node already holds are not fetched again."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(torch_home) / "hub" / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "torch" / "hub" / "checkpoints"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def resolve_weights(source: str, cache_dir: Path, sha256: str | None) -> Path:
    """The local path of the weights: the file itself, or the cached download of a URL."""
    if is_url(source):
        path = cache_dir / _file_name(source)
        if path.is_file():
            print(f"weights: using cached {path}", flush=True)
        else:
            _download(source, path)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UsageError(
                f"--weights {source}: file not found; pass an existing .pth file or an http(s) URL"
            )
    if sha256 is not None:
        _check_sha256(path, sha256, source)
    return path


def _file_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise UsageError(f"--weights {url}: the URL names no file; give the URL of a .pth file")
    return name


def _download(url: str, target: Path) -> None:
    """Stream into a temp file beside the target, then rename: an interrupted download never
    leaves a partial file that a later run would take for the real one."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--weights-cache {target.parent}: cannot create ({exc.strerror}); "
            "pass a writable --weights-cache"
        ) from None
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    started = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            print(f"weights: downloading {url} ({_mb(total)}) to {target}", flush=True)
            done, shown = 0, started
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if time.monotonic() - shown >= _PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    share = f" ({done / total:.0%})" if total else ""
                    print(f"weights: {_mb(done)}{share}", flush=True)
            if total and done != total:
                raise UsageError(
                    f"--weights {url}: download failed (got {done} of {total} bytes); try again"
                )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise UsageError(
            f"--weights {url}: download failed ({_reason(exc)}); check the URL and the "
            "network, or download the file yourself and pass its path"
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    elapsed = time.monotonic() - started
    print(f"weights: downloaded {_mb(done)} in {elapsed:.1f} s", flush=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or exc.__class__.__name__


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count else "size unknown"


def _check_sha256(path: Path, expected: str, source: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected.lower():
        fix = f"delete {path} to download again" if is_url(source) else "check the file"
        raise UsageError(
            f"--weights-sha256: {source} has sha256 {actual}, expected {expected}; {fix}"
        )


def read_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling error means "not a weights file we can read"
        raise UsageError(
            f"--weights {source}: not a readable PyTorch weights file "
            f"({exc.__class__.__name__}); pass a state_dict saved with torch.save"
        ) from None
    state = _unwrap(loaded)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(
            f"--weights {source}: holds no state_dict (a mapping of names to tensors); "
            "pass a file saved with torch.save(model.state_dict(), path)"
        )
    prefix = "module."
    if all(key.startswith(prefix) for key in state):
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def _unwrap(loaded: Any) -> dict[str, Any]:
    if not isinstance(loaded, Mapping):
        return {}
    models = loaded.get("models")
    if isinstance(models, Mapping) and isinstance(models.get("model"), Mapping):
        return dict(models["model"])  # a checkpoint of this workload
    for key in ("state_dict", "model"):
        if isinstance(loaded.get(key), Mapping):
            return dict(loaded[key])
    return dict(loaded)


def load_backbone(
    model: nn.Module, arch: str, state: Mapping[str, torch.Tensor], source: str
) -> int:
    """Copy every non-head tensor of ``state`` into ``model``; the head (fc or classifier.6)
    stays new, as transfer learning replaces it. Returns the number of tensors loaded."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not is_head_key(arch, k)}
    given = {k: v for k, v in state.items() if not is_head_key(arch, k)}
    problem = describe_mismatch(expected, {k: v.shape for k, v in given.items()})
    if problem:
        guess = guess_arch(state)
        hint = f"it looks like {guess} weights; " if guess and guess != arch else ""
        raise UsageError(
            f"--weights {source}: does not fit --arch {arch}: {problem}; {hint}"
            "pass the --arch the file was saved from"
        )
    model.load_state_dict(given, strict=False)
    return len(given)


def describe_mismatch(expected: Mapping[str, torch.Size], given: Mapping[str, torch.Size]) -> str:
    """'' when names and shapes agree, else a short account naming the first offenders."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} {tuple(given[k])} vs {tuple(shape)}"
        for k, shape in expected.items()
        if k in given and given[k] != shape
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f", ... (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:_SHOWN_KEYS])}{more})")
    return "; ".join(parts)


def guess_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """The architecture whose backbone names and shapes the file matches exactly, if any
    (models are built on the meta device: no memory, no time)."""
    for arch in ARCHS:
        with torch.device("meta"):
            reference = build_model(arch).state_dict()
        backbone = {k: v.shape for k, v in reference.items() if not is_head_key(arch, k)}
        given = {k: v.shape for k, v in state.items() if not is_head_key(arch, k)}
        if backbone == given:
            return arch
    return None
