"""The venv runtime, for real, on this machine through LocalTransport.

This machine's Python has torch, numpy and Pillow, so with --system-site-packages pip finds every
requirement satisfied; PIP_NO_INDEX=1 keeps pip off the network all the same.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpujobs.errors import ProvisioningError
from gpujobs.remote.transport import CommandResult, LocalTransport
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.runtime.venv import READY_MARKER, VenvRuntime
from gpujobs.spec import JobSpec, parse_spec

REQUIREMENTS = Path(__file__).resolve().parents[1] / "jobs" / "requirements.txt"


@dataclass
class RecordingTransport(LocalTransport):
    """The real LocalTransport, remembering every command; `before` runs ahead of each one."""

    commands: list[list[str]] = field(default_factory=list)
    before: Callable[[list[str]], None] | None = None

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        self.commands.append(list(argv))
        if self.before is not None:
            self.before(list(argv))
        return super().run(argv, timeout=timeout, check=check)

    def ran(self, word: str) -> bool:
        return any(word in command for command in self.commands)


@dataclass
class Built:
    runtime: VenvRuntime
    layout: NodeLayout
    transport: RecordingTransport
    root: Path


def make_node(folder: Path, requirements: str | None = None) -> NodeLayout:
    """A node work directory whose pushed bundle holds jobs/requirements.txt."""
    layout = NodeLayout(str(folder))
    target = Path(layout.code) / "jobs" / "requirements.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    if requirements is None:
        shutil.copy(REQUIREMENTS, target)
    else:
        target.write_text(requirements)
    return layout


def workload_spec(tmp_path: Path) -> JobSpec:
    return parse_spec("name: t\nworkload: mnist_cnn\n", label="spec.yaml", base_dir=tmp_path)


def leftovers(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if ".tmp-" in path.name)


def stub_python(folder: Path, body: str) -> str:
    """An executable standing in for a node's interpreter (an old one, or one without venv)."""
    path = folder / "python-stub"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One venv for the module, built once: the slow part (a few seconds)."""
    base = tmp_path_factory.mktemp("venv-runtime")
    layout = make_node(base / "node")
    root = base / "venvs"
    runtime = VenvRuntime(str(root), python=sys.executable)
    transport = RecordingTransport()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_NO_INDEX", "1")
        runtime.prepare(transport, layout, workload_spec(base))
    yield Built(runtime, layout, transport, root)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def test_first_prepare_builds_a_venv_that_runs_the_workloads(built: Built) -> None:
    venv = built.runtime.venv
    assert venv is not None
    assert Path(venv).parent == built.root
    assert len(Path(venv).name) == 12
    assert int(Path(venv).name, 16) >= 0
    assert (Path(venv) / READY_MARKER).read_text().strip()
    assert leftovers(built.root) == []
    assert built.transport.ran("--system-site-packages")
    assert any(command[1:4] == ["-m", "pip", "install"] for command in built.transport.commands)

    # Built under a temporary name and renamed: its python must still know where it lives.
    python = Path(venv) / "bin" / "python"
    assert python.is_symlink()
    check = LocalTransport().run(
        [str(python), "-c", "import sys, torch, numpy, PIL; print(sys.prefix)"], timeout=120
    )
    assert check.stdout.strip() == venv


def test_second_prepare_reuses_the_venv_without_pip(built: Built, tmp_path: Path) -> None:
    venv = built.runtime.venv
    assert venv is not None
    marker = Path(venv) / READY_MARKER
    stamp = marker.stat().st_mtime_ns
    transport = RecordingTransport()
    runtime = VenvRuntime(str(built.root), python=sys.executable)

    runtime.prepare(transport, built.layout, workload_spec(tmp_path))

    assert runtime.venv == venv
    assert len(transport.commands) == 1  # the interpreter probe, nothing else
    assert not transport.ran("pip") and not transport.ran("venv")
    assert marker.stat().st_mtime_ns == stamp


def test_argv_runs_the_workload_with_the_venv_python(built: Built, tmp_path: Path) -> None:
    argv = built.runtime.argv(workload_spec(tmp_path), built.layout)
    assert argv[:3] == [f"{built.runtime.venv}/bin/python", "-m", "jobs.mnist_cnn"]
    assert "--data" in argv and built.layout.data in argv


def test_argv_before_prepare_says_so(tmp_path: Path) -> None:
    runtime = VenvRuntime(str(tmp_path / "venvs"))
    with pytest.raises(ProvisioningError, match="prepare"):
        runtime.argv(workload_spec(tmp_path), make_node(tmp_path / "node"))


def test_custom_command_needs_no_venv(tmp_path: Path) -> None:
    spec = parse_spec("name: t\ncommand: echo hi\n", label="spec.yaml", base_dir=tmp_path)
    layout = make_node(tmp_path / "node")
    transport = RecordingTransport()
    runtime = VenvRuntime(str(tmp_path / "venvs"), python=sys.executable)

    runtime.prepare(transport, layout, spec)

    assert transport.commands == []
    assert runtime.venv is None
    assert runtime.argv(spec, layout) == ["sh", "-c", "echo hi"]


def test_changed_requirements_make_a_new_venv(built: Built, tmp_path: Path, offline: None) -> None:
    changed = REQUIREMENTS.read_text() + "# a changed requirements file\n"
    layout = make_node(tmp_path / "node", changed)
    runtime = VenvRuntime(str(built.root), python=sys.executable)

    runtime.prepare(LocalTransport(), layout, workload_spec(tmp_path))

    assert runtime.venv is not None and runtime.venv != built.runtime.venv
    assert Path(runtime.venv, READY_MARKER).exists()
    assert Path(str(built.runtime.venv), READY_MARKER).exists()


def test_a_job_that_loses_the_race_uses_the_winners_venv(tmp_path: Path, offline: None) -> None:
    root = tmp_path / "venvs"
    layout = make_node(tmp_path / "node")
    spec = workload_spec(tmp_path)
    winner = VenvRuntime(str(root), python=sys.executable)

    def other_job_finishes_first(argv: list[str]) -> None:
        # Just before the loser renames its finished venv into place, another job does.
        if "os.rename" in " ".join(argv) and winner.venv is None:
            winner.prepare(LocalTransport(), layout, spec)

    loser = VenvRuntime(str(root), python=sys.executable)
    transport = RecordingTransport(before=other_job_finishes_first)
    loser.prepare(transport, layout, spec)

    assert winner.venv is not None and loser.venv == winner.venv
    assert Path(winner.venv, READY_MARKER).exists()
    assert transport.ran("rm")  # the loser built its own, then threw it away
    assert leftovers(root) == []
    assert [path.name for path in root.iterdir()] == [Path(winner.venv).name]


def test_a_missing_interpreter_names_ssh_python(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    runtime = VenvRuntime(str(root), python=str(tmp_path / "no-such-python3"))
    with pytest.raises(ProvisioningError, match=r"ssh\.python") as raised:
        runtime.prepare(LocalTransport(), make_node(tmp_path / "node"), workload_spec(tmp_path))
    assert "\n" not in str(raised.value)
    assert not root.exists()


def test_an_old_interpreter_is_refused(tmp_path: Path) -> None:
    python = stub_python(tmp_path, "echo 3.8")
    runtime = VenvRuntime(str(tmp_path / "venvs"), python=python)
    with pytest.raises(ProvisioningError, match=r"Python 3\.8, older than 3\.9.*ssh\.python"):
        runtime.prepare(LocalTransport(), make_node(tmp_path / "node"), workload_spec(tmp_path))


def test_an_interpreter_without_venv_suggests_another(tmp_path: Path) -> None:
    # Debian's python3 without python3-venv: it runs, but `-m venv` fails.
    python = stub_python(
        tmp_path,
        'if [ "$2" = venv ]; then\n'
        "  echo 'The virtual environment was not created successfully because ensurepip is not"
        " available.' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {sys.executable} "$@"',
    )
    root = tmp_path / "venvs"
    runtime = VenvRuntime(str(root), python=python)
    with pytest.raises(
        ProvisioningError, match=r"python3-venv.*ssh\.python to a conda or pyenv python"
    ):
        runtime.prepare(LocalTransport(), make_node(tmp_path / "node"), workload_spec(tmp_path))
    assert leftovers(root) == []
    assert runtime.venv is None


def test_a_failing_pip_install_shows_pips_tail_and_leaves_nothing(
    tmp_path: Path, offline: None
) -> None:
    root = tmp_path / "venvs"
    layout = make_node(tmp_path / "node", "gpujobs-no-such-package==0.0.0\n")
    runtime = VenvRuntime(str(root), python=sys.executable)

    with pytest.raises(ProvisioningError) as raised:
        runtime.prepare(LocalTransport(), layout, workload_spec(tmp_path))

    message = str(raised.value)
    assert message.startswith("pip could not install")
    assert "No matching distribution found for gpujobs-no-such-package" in message
    assert os.listdir(root) == []
    assert runtime.venv is None


def test_the_root_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        VenvRuntime("venvs")
    with pytest.raises(ValueError, match="absolute"):
        VenvRuntime("~/venvs")


@dataclass
class NoTorchNoGpu(RecordingTransport):
    """A CPU-only lab machine whose Python lacks torch: the torch probe and nvidia-smi fail
    there; pip's torch install is answered (and recorded) instead of downloaded."""

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        words = list(argv)
        if words[-1:] == ["torch"] and "-c" in words and "find_spec" in words[2]:
            self.commands.append(words)
            return CommandResult(" ".join(words), 1, "", "")
        if words[:3] == ["sh", "-c", "nvidia-smi -L"]:
            self.commands.append(words)
            return CommandResult(" ".join(words), 127, "", "nvidia-smi: not found")
        if "--index-url" in words:
            self.commands.append(words)
            return CommandResult(" ".join(words), 0, "Successfully installed torch-2.5.1+cpu", "")
        return super().run(argv, timeout=timeout, check=check)


def test_a_cpu_only_host_without_torch_gets_the_cpu_build(tmp_path: Path, offline: None) -> None:
    runtime = VenvRuntime(str(tmp_path / "venvs"), python=sys.executable)
    transport = NoTorchNoGpu()
    runtime.prepare(transport, make_node(tmp_path / "node"), workload_spec(tmp_path))

    [cpu_torch] = [c for c in transport.commands if "--index-url" in c]
    assert cpu_torch[-3:] == ["--index-url", "https://download.pytorch.org/whl/cpu", "torch"]
    requirements = next(i for i, c in enumerate(transport.commands) if "-r" in c)
    assert transport.commands.index(cpu_torch) < requirements, "torch first, then the rest"


def test_a_host_with_torch_installs_no_other_build(built: Built) -> None:
    assert not built.transport.ran("--index-url"), "torch was there: nothing downloaded"
