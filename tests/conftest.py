"""Every test gets its own gpujobs home and working directory; nothing leaves loopback
(pytest-socket, configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpujobs.paths import HomeLayout
from gpujobs.state import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUJOBS_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def home(tmp_path: Path) -> HomeLayout:
    return HomeLayout(tmp_path / "home").ensure()


@pytest.fixture
def store(home: HomeLayout) -> Store:
    opened = Store(home.state_db)
    yield opened
    opened.close()


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def gpujobs_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    """The real command in a child process (its own interpreter, signals and exit codes)."""
    return subprocess.run(
        [sys.executable, "-m", "gpujobs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        **kwargs,
    )
