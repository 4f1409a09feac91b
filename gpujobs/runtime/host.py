"""The host runtime: the node's own Python runs the bundled workload (the local provider's way)."""

from __future__ import annotations

import posixpath
import sys
from typing import TYPE_CHECKING

from gpujobs.errors import ProvisioningError
from gpujobs.remote.transport import Transport
from gpujobs.runtime.base import ProcessRuntime, in_path_env, workload_argv
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec

if TYPE_CHECKING:
    from gpujobs.group import NodeGroup

# What the bundled workloads import; checked without importing them (torch alone takes seconds).
_WORKLOAD_MODULES = ("torch", "numpy", "PIL")
_CHECK = (
    "import importlib.util, sys; "
    "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]; "
    "print(' '.join(missing)); sys.exit(3 if missing else 0)"
)


class HostRuntime(ProcessRuntime):
    name = "host"

    def __init__(self, python: str = sys.executable) -> None:
        super().__init__()
        self.python = python

    @property
    def bin_dir(self) -> str | None:
        """The interpreter's folder, first on PATH for setup and command: `pip` there is the
        one of the Python that runs the job (a conda env's, a venv's)."""
        return posixpath.dirname(self.python) if posixpath.isabs(self.python) else None

    def prepare(self, transport: Transport, layout: NodeLayout, spec: JobSpec) -> None:
        if spec.workload is None:
            return
        result = transport.run(
            [self.python, "-c", _CHECK, *_WORKLOAD_MODULES], timeout=60, check=False
        )
        if not result.ok:
            missing = result.stdout.strip() or result.tail(3)
            raise ProvisioningError(
                f"{self.python} lacks what the workloads need ({missing}): "
                "install them with `pip install 'gpujobs[train]'`"
            )

    def argv(
        self, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
    ) -> list[str]:
        argv = workload_argv(self.python, spec, layout, group, rank, node_paths=self.node_paths)
        return in_path_env(self.bin_dir, argv) if spec.command is not None else argv

    def environment_id(self) -> str:
        return f"host:{self.python}"
