"""The venv runtime: for nodes where the user has neither root nor Docker (lab machines over SSH).

The bundled workloads run in a virtual environment that gpujobs builds on the node itself, from
the node's own interpreter and the bundle's `jobs/requirements.txt`. It is created with
`--system-site-packages` on purpose: a lab machine's preinstalled CUDA build of torch is kept, pip
installs only what is missing, and nothing is downloaded when everything is already there.

Venvs live under one folder on the node, keyed by what they are built from (the requirements and
the interpreter), so every job with the same needs shares one, and a changed requirements file
makes a new one. Everything is said to the node through the Transport, as argv lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import secrets
from typing import TYPE_CHECKING

from gpujobs.errors import (
    GpuJobsError,
    ProvisioningError,
    TransportError,
    TransportTimeoutError,
)
from gpujobs.remote.transport import CommandResult, Transport
from gpujobs.runtime.base import ProcessRuntime, in_path_env, workload_argv
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec

if TYPE_CHECKING:
    from gpujobs.group import NodeGroup

READY_MARKER = ".gpujobs-ready"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_PYTHON = (3, 9)
PIP_TIMEOUT_S = 30 * 60
_TAIL_LINES = 8
# Exit codes of a command that could not be started at all, as a shell reports them over SSH.
_NOT_RUNNABLE = (126, 127)
_FIX_PYTHON = "set ssh.python to an interpreter path on the node"
_OTHER_PYTHON = "set ssh.python to a conda or pyenv python on the node"

# Kept runnable by any Python, even 2.x, so that an old interpreter gets our message, not a
# SyntaxError. The version goes first and alone; prefix and version (which may hold newlines) as
# JSON on the next line.
_PROBE = (
    "import sys\n"
    "print('%d.%d' % sys.version_info[:2])\n"
    f"if sys.version_info < {MIN_PYTHON!r}:\n"
    "    sys.exit(0)\n"
    "import json\n"
    "print(json.dumps([sys.prefix, sys.version]))\n"
)
# rename(2) is atomic, and refuses to replace a directory that has anything in it: that refusal is
# how a builder learns another job got there first. (`mv` would move the folder *into* the target.)
_RENAME = (
    "import errno, os, sys\n"
    "try:\n"
    "    os.rename(sys.argv[1], sys.argv[2])\n"
    "except OSError as exc:\n"
    "    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):\n"
    "        sys.exit(3)\n"
    "    raise\n"
)
_LOST_RACE = 3
# `pip` and `pip3` in a venv made --without-pip: its python's `-m pip` (relative to the script,
# so the venv may be renamed into place).
_PIP_SHIMS = (
    'for name in pip pip3; do [ -e "$1/$name" ] || { printf \'%s\\n\' "#!/bin/sh" '
    '\'exec "$(dirname "$0")/python" -m pip "$@"\' > "$1/$name" && chmod 755 "$1/$name"; }; done'
)
_WRITE_MARKER = 'printf "%s\\n" "$2" > "$1"'


class VenvRuntime(ProcessRuntime):
    """Runs the bundled workloads with `<root>/<key>/bin/python`, building that venv if need be.

    `root` is an absolute folder on the node that keeps the venvs; `python` is the node's
    interpreter the venvs are made from.
    """

    name = "venv"

    def __init__(self, root: str, python: str = "python3") -> None:
        # No shell ever expands a path here (argv only), so `~/venvs` would be a folder named `~`.
        if not posixpath.isabs(root):
            raise ValueError(f"venv root {root!r} is not an absolute path on the node")
        self.root = posixpath.normpath(root)
        super().__init__()
        self.python = python
        self._venv: str | None = None

    @property
    def venv(self) -> str | None:
        """The venv the workload runs in, once `prepare` has chosen it."""
        return self._venv

    def prepare(self, transport: Transport, layout: NodeLayout, spec: JobSpec) -> None:
        if spec.workload is None:
            if spec.setup is not None:
                self._prepare_for_setup(transport, spec.setup)
            return  # A custom `command:` without a setup brings its own environment.
        prefix, version = self._probe(transport)
        requirements = f"{layout.code}/jobs/requirements.txt"
        wanted = transport.read(requirements, 0)
        if not wanted:
            raise ProvisioningError(
                f"{requirements} is missing or empty on the node: the code bundle must be pushed "
                "before the venv runtime prepares"
            )
        # The interpreter's prefix joins the key because --system-site-packages makes its
        # site-packages part of the venv: two conda envs share one sys.version, not one torch.
        inputs = b"\0".join([wanted, version.encode(), prefix.encode()])
        key = hashlib.sha256(inputs).hexdigest()[:12]
        venv = f"{self.root}/{key}"
        if not self._is_ready(transport, venv):
            self._build(transport, venv, requirements, f"{self.python} {version}")
        self._venv = venv

    def _prepare_for_setup(self, transport: Transport, setup: str) -> None:
        """A `command:` job with a `setup:` gets a venv of its own setup (keyed by it), where
        `pip install` works without root; the host's packages stay visible in it, so a lab
        machine's CUDA torch is not downloaded again."""
        prefix, version = self._probe(transport)
        inputs = b"\0".join([b"setup", setup.encode(), version.encode(), prefix.encode()])
        venv = f"{self.root}/setup-{hashlib.sha256(inputs).hexdigest()[:12]}"
        if not self._is_ready(transport, venv):
            self._build(transport, venv, None, f"{self.python} {version}")
        self._venv = venv

    @property
    def bin_dir(self) -> str | None:
        return f"{self._venv}/bin" if self._venv else None

    def environment_id(self) -> str:
        return f"venv:{self._venv or self.python}"

    def argv(
        self, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
    ) -> list[str]:
        if spec.workload is None:
            argv = workload_argv(self.python, spec, layout)
            return in_path_env(self.bin_dir, argv)
        if self._venv is None:
            raise ProvisioningError(
                "the venv runtime has no venv yet: prepare() runs before argv() on the same runtime"
            )
        python = f"{self._venv}/bin/python"
        return workload_argv(python, spec, layout, group, rank, node_paths=self.node_paths)

    def _probe(self, transport: Transport) -> tuple[str, str]:
        """The interpreter's (sys.prefix, sys.version); a ProvisioningError says what to fix."""
        try:
            result = transport.run([self.python, "-c", _PROBE], timeout=60, check=False)
        except TransportTimeoutError:
            raise ProvisioningError(
                f"{self.python} did not answer within 60s on the node; {_FIX_PYTHON}"
            ) from None
        except TransportError as exc:
            # LocalTransport cannot even start a missing program; SSH reports 127 instead (below).
            # Connection troubles (lost, refused) are subclasses that already say the right thing.
            if type(exc) is not TransportError:
                raise
            # The message quotes the whole probe script; only the reason after it is worth saying.
            reason = str(exc).rsplit(": ", 1)[-1]
            raise ProvisioningError(
                f"cannot run {self.python!r} on the node ({reason}); {_FIX_PYTHON}"
            ) from None
        if result.exit_code in _NOT_RUNNABLE:
            raise ProvisioningError(
                f"no Python interpreter {self.python!r} on the node ({result.tail(1)}); "
                f"{_FIX_PYTHON}"
            )
        lines = result.stdout.splitlines()
        if not result.ok or not lines:
            raise ProvisioningError(
                f"{self.python} on the node does not run ({_one_line(result)}); {_FIX_PYTHON}"
            )
        if len(lines) < 2:
            raise ProvisioningError(
                f"{self.python} on the node is Python {lines[0].strip()}, older than "
                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} which the workloads need; {_OTHER_PYTHON}"
            )
        try:
            prefix, version = json.loads(lines[1])
        except ValueError:
            raise ProvisioningError(
                f"{self.python} on the node printed {lines[1]!r} instead of its version; "
                f"{_FIX_PYTHON}"
            ) from None
        return str(prefix), str(version)

    def _is_ready(self, transport: Transport, venv: str) -> bool:
        # The marker is written last, before the rename, and is never empty: present means whole.
        return bool(transport.read(f"{venv}/{READY_MARKER}", 0, 64))

    def _build(
        self, transport: Transport, venv: str, requirements: str | None, built_from: str
    ) -> None:
        """Build the venv beside its final place and rename it there.

        Lock-free on purpose: a lock held by a job that dies (or a node that reboots) would need
        stale-lock recovery, while a private temporary folder needs none. Two jobs that race both
        build, the first rename wins and the loser discards its own copy. Renaming a venv is safe
        for how we use it: venvs are not relocatable in general (bin/ scripts and `activate` keep
        the old path), but we only ever run `<venv>/bin/python -m ...`, bin/python is a symlink to
        the base interpreter, and Python finds its venv from pyvenv.cfg next to the path it was
        started by, so sys.prefix is the new place.
        """
        tmp = f"{venv}.tmp-{secrets.token_hex(4)}"
        made = transport.run(["mkdir", "-p", self.root], timeout=30, check=False)
        if made.ok:
            made = transport.run(["mkdir", "-m", "700", tmp], timeout=30, check=False)
        if not made.ok:
            raise ProvisioningError(
                f"cannot create {tmp} on the node ({_one_line(made)}); "
                "choose a venv root the node's user can write"
            )
        try:
            self._create(transport, tmp)
            if requirements is not None:
                self._install(transport, tmp, requirements)
            transport.run(
                ["sh", "-c", _WRITE_MARKER, "sh", f"{tmp}/{READY_MARKER}", built_from], timeout=30
            )
            renamed = transport.run(
                [self.python, "-c", _RENAME, tmp, venv], timeout=30, check=False
            )
            if renamed.exit_code == _LOST_RACE:
                self._discard(transport, tmp)
                if not self._is_ready(transport, venv):
                    raise ProvisioningError(
                        f"{venv} exists on the node but is not a finished gpujobs venv; remove it"
                    )
            elif not renamed.ok:
                raise ProvisioningError(
                    f"cannot move the new venv to {venv} on the node ({_one_line(renamed)})"
                )
        except BaseException:
            self._discard(transport, tmp)
            raise

    def _create(self, transport: Transport, tmp: str) -> None:
        # --without-pip, then the interpreter's own pip where it has one: on Python <= 3.11 the
        # pip that ensurepip bundles brings an old setuptools that shadows the system's, and pip
        # would then download a newer one for torch even when everything is installed.
        created = transport.run(
            [self.python, "-m", "venv", "--system-site-packages", "--without-pip", tmp],
            timeout=300,
            check=False,
        )
        if not created.ok:
            raise ProvisioningError(_no_venv(self.python, created))
        if transport.run([f"{tmp}/bin/python", "-m", "pip", "--version"], check=False).ok:
            # The interpreter's own pip serves the venv; `pip` on PATH must be the venv's too,
            # or a setup's `pip install` would reach past it (to ~/.local, or refused).
            transport.run(["sh", "-c", _PIP_SHIMS, "sh", f"{tmp}/bin"], timeout=30)
            return
        seeded = transport.run([f"{tmp}/bin/python", "-m", "ensurepip"], timeout=300, check=False)
        if not seeded.ok:
            raise ProvisioningError(_no_venv(self.python, seeded))

    def _install(self, transport: Transport, tmp: str, requirements: str) -> None:
        python = f"{tmp}/bin/python"
        if not self._has(transport, python, "torch") and not self._has_gpu(transport):
            # pip's default torch on Linux is the CUDA build (5 GB of venv); a host without an
            # NVIDIA GPU gets the CPU build (under 1 GB), from PyTorch's own CPU index.
            self._pip(transport, [python, "-m", "pip", "install", "--disable-pip-version-check",
                                  "--no-input", "--index-url", CPU_TORCH_INDEX, "torch"],
                      "the CPU build of torch")  # fmt: skip
        argv = [
            f"{tmp}/bin/python", "-m", "pip", "install",
            "--disable-pip-version-check", "--no-input", "-r", requirements,
        ]  # fmt: skip
        self._pip(transport, argv, requirements)

    def _pip(self, transport: Transport, argv: list[str], what: str) -> None:
        try:
            installed = transport.run(argv, timeout=PIP_TIMEOUT_S, check=False)
        except TransportTimeoutError:
            raise ProvisioningError(
                f"pip install of {what} did not finish in {PIP_TIMEOUT_S // 60} min on the "
                "node; check its network or package index"
            ) from None
        if not installed.ok:
            raise ProvisioningError(
                f"pip could not install {what} into a venv on the node (exit "
                f"{installed.exit_code}); fix the requirement or the node's package index. "
                f"pip said:\n{installed.tail(_TAIL_LINES)}"
            )

    def _has(self, transport: Transport, python: str, module: str) -> bool:
        probe = (
            "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"
        )
        return transport.run([python, "-c", probe, module], timeout=60, check=False).ok

    def _has_gpu(self, transport: Transport) -> bool:
        return transport.run(["sh", "-c", "nvidia-smi -L"], timeout=60, check=False).ok

    def _discard(self, transport: Transport, tmp: str) -> None:
        # Best effort: the error that brought us here matters more than a failed cleanup.
        with contextlib.suppress(GpuJobsError):
            transport.run(["rm", "-rf", "--", tmp], timeout=300, check=False)


def _no_venv(python: str, result: CommandResult) -> str:
    return (
        f"{python} cannot create a venv with pip on the node ({_one_line(result)}): Debian and "
        "Ubuntu leave venv/ensurepip to the python3-venv package, which needs root; "
        f"{_OTHER_PYTHON}"
    )


def _one_line(result: CommandResult) -> str:
    return result.tail(1) or f"exit {result.exit_code}"
