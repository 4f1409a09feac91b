"""The folders draw the layers, and imports point down them (README, "Layout"). Every import in
gpujobs/, lazy and TYPE_CHECKING ones included, is read with ast and checked against the order;
and the repository keeps no file over 1 MB (build outputs and downloads stay out of git)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "gpujobs"

# Highest first; a module may import its own layer and any layer below it.
LAYERS = ["cli", "api", "lifecycle", "placement", "money", "providers", "runtime", "remote"]
GROUND = 0  # spec, state, errors, models, group, ... : everything not in a layer folder


def layer_of(module: str) -> int | None:
    """The rank of a gpujobs module (ground = 0, cli highest); None for the shipped fakes."""
    parts = module.split(".")
    if parts[0] != "gpujobs":
        raise ValueError(module)
    top = parts[1] if len(parts) > 1 else ""
    if top == "testing":
        return None
    if top in LAYERS:
        return len(LAYERS) - LAYERS.index(top)
    return GROUND


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def gpujobs_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gpujobs":
                found += [(node.lineno, f"gpujobs.{alias.name}") for alias in node.names]
            elif node.module.startswith("gpujobs."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("gpujobs.")]
    return found


def test_imports_point_down_the_layers() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        if importer in ("gpujobs", "gpujobs.__main__"):
            continue  # the facade (`gpujobs.launch`, lazily) and `python -m gpujobs` sit on top
        rank = layer_of(importer)
        for line, imported in gpujobs_imports(path):
            if imported == "gpujobs.__version__":
                continue
            target = layer_of(imported)
            if target is None and rank is not None:
                upward.append(f"{path.relative_to(REPO)}:{line} imports the fakes {imported}")
            elif rank is not None and target is not None and target > rank:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {imported} (up)")
    assert not upward, "\n".join(upward)


def test_the_cli_asks_the_core_only_through_the_api() -> None:
    """The Typer app reaches the core through gpujobs.api; the views draw plain data."""
    allowed_core = {
        "gpujobs.api",
        "gpujobs.api.controller",
        "gpujobs.errors",
        "gpujobs.spec",
        "gpujobs.state",
    }
    app = PACKAGE / "cli" / "app.py"
    reached = {
        imported
        for _, imported in gpujobs_imports(app)
        if not imported.startswith(("gpujobs.cli", "gpujobs.api."))
        and imported != "gpujobs.__version__"
    }  # any module of the api package is the api (jobs, live, maintenance, ...)
    assert reached <= allowed_core, sorted(reached - allowed_core)


def test_importing_gpujobs_and_its_help_load_no_cloud_sdk_and_no_torch() -> None:
    probe = (
        "import sys, gpujobs, gpujobs.api\n"
        "from gpujobs.cli.app import create_app\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(create_app(), ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = ('torch', 'boto3', 'botocore', 'google.cloud', 'googleapiclient', 'paramiko',\n"
        "         'numpy', 'PIL')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or\n"
        "             m.startswith('google.cloud')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("limit_bytes", [1024 * 1024])
def test_no_tracked_file_is_over_a_megabyte(limit_bytes: int) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    big = [
        name.decode()
        for name in listed
        if name
        and (REPO / name.decode()).is_file()
        and (REPO / name.decode()).stat().st_size > limit_bytes
    ]
    assert not big, f"tracked files over 1 MB (keep build outputs out of git): {big}"
