"""The workload image built here, for `gpujobs image build` and `gpujobs image push`: users who
build once on a laptop or in CI, push to their registry, and name it as `image:` in their specs.

The build context is made in a temporary folder (the Dockerfile and the bundled workloads, as a
node's build has them), so it works from an installed gpujobs as well as from a checkout. The
docker client runs as argv, its output passed on line by line.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from gpujobs.errors import BadInputError, GpuJobsError
from gpujobs.runtime.bundle import is_bundle_junk
from gpujobs.runtime.docker import dockerfile, workload_image_tag
from gpujobs.workloads import jobs_package_dir


def build(
    *, base: str | None, wheels: str | None, tag: str | None, on_line: Callable[[str], None]
) -> str:
    """Build the workload image with this machine's docker; returns its tag (the content tag
    a node would give it, unless `tag` names another)."""
    args = {name: value for name, value in (("BASE", base), ("WHEELS", wheels)) if value}
    content_tag = workload_image_tag(args)
    with tempfile.TemporaryDirectory(prefix="gpujobs-image-") as folder:
        context = Path(folder)
        (context / "Dockerfile").write_bytes(dockerfile())
        shutil.copytree(
            jobs_package_dir(),
            context / "jobs",
            ignore=lambda here, names: [
                name for name in names
                if is_bundle_junk(str(Path(here, name).relative_to(jobs_package_dir())))
            ],
        )  # fmt: skip
        flags = [word for item in args.items() for word in ("--build-arg", "=".join(item))]
        tags = [word for name in dict.fromkeys([content_tag, tag or content_tag]) for word in
                ("-t", name)]  # fmt: skip
        _docker(
            ["build", "--label", "gpujobs-image=workloads", *flags, *tags, str(context)], on_line
        )
    return tag or content_tag


def push(reference: str, *, on_line: Callable[[str], None]) -> str:
    """Tag this gpujobs' workload image (built here first, if it is not) as `reference`
    (REPO or REPO:TAG) and push it; returns the reference to put in a spec's `image:`."""
    if not reference or reference.startswith("-") or any(c.isspace() for c in reference):
        raise BadInputError(f"image push {reference!r}: give REPO[:TAG], e.g. ghcr.io/me/gpujobs")
    content_tag = workload_image_tag({})
    if ":" not in reference.rsplit("/", 1)[-1]:
        reference = f"{reference}:{content_tag.split(':', 1)[1]}"
    if subprocess.run(_argv(["image", "inspect", content_tag]), capture_output=True).returncode:
        raise BadInputError(
            f"image push: {content_tag} is not built here; run `gpujobs image build` first"
        )
    _docker(["tag", content_tag, reference], on_line)
    _docker(["push", reference], on_line)
    return reference


def _argv(words: list[str]) -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        raise GpuJobsError("docker is not installed here: install Docker to build the image")
    return [docker, *words]


def _docker(words: list[str], on_line: Callable[[str], None]) -> None:
    with subprocess.Popen(
        _argv(words), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        assert child.stdout is not None
        tail: list[str] = []
        for line in child.stdout:
            on_line(line.rstrip("\n"))
            tail = [*tail[-7:], line.rstrip("\n")]
    if child.returncode:
        raise GpuJobsError(
            f"docker {words[0]} failed (exit {child.returncode}): " + " | ".join(tail[-3:])
        )
