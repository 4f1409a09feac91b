"""A Docker engine and an offline base for building docker/Dockerfile with no image registry.

No image can be pulled on the machines gpujobs is tested on, so the base is made here:
debootstrap writes a minimal Debian bookworm with Python from the Debian mirror apt already uses,
`docker import` turns it into gpujobs-test-base:bookworm, and a second image,
gpujobs-test-base:bookworm-wheels, adds /opt/wheels: torch (the CPU build constraints.txt pins)
and everything else the Dockerfile's `pip install` asks for, downloaded once by pip into a
folder cached on the machine. docker/Dockerfile then builds on it with
`--build-arg BASE=gpujobs-test-base:bookworm-wheels --build-arg WHEELS=/opt/wheels`.

Every step is skipped when its result is already there, so a second run costs a few `docker
image inspect`s. Run as root before the tests (.ci/run does):

    python3 -m tests.docker_base
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
SUITE = "bookworm"
BASE_IMAGE = f"gpujobs-test-base:{SUITE}"
WHEELS_IMAGE = f"gpujobs-test-base:{SUITE}-wheels"
WHEELS_IN_IMAGE = "/opt/wheels"
# Python for the jobs, venv and pip for the Dockerfile's virtual environment; minbase has
# passwd (useradd) already.
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip")
WHEELS_LABEL = "gpujobs.test.wheels"

# Flags for a dockerd the tests start: no docker0 bridge and no iptables or forwarding changes on
# the host. Every container the tests run uses --network none (builds too), so nothing needs a
# bridge, and the host's firewall is left exactly as it was.
DOCKERD_FLAGS = (
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
)
DOCKERD_LOG = Path("/var/log/gpujobs-dockerd.log")
DOCKERD_PIDFILE = Path("/var/run/docker.pid")


class EngineUnavailable(RuntimeError):
    """No Docker engine can be had here; the message says why."""


def log(message: str) -> None:
    print(f"[docker_base] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where downloads are kept between runs: /var/cache/gpujobs-test for root, else a folder of
    the user's own under the temp dir (GPUJOBS_TEST_CACHE overrides both)."""
    if override := os.environ.get("GPUJOBS_TEST_CACHE"):
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/gpujobs-test")
    return Path(tempfile.gettempdir()) / f"gpujobs-test-{os.geteuid()}"


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One builder at a time on this machine: .ci/run, a test session and another worktree's
    session may all find the images missing at once."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def docker(
    *args: str, timeout: float = 120, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ...: {done.stderr.strip()[-2000:]}")
    return done


# -- the engine -------------------------------------------------------------------------------


def engine_answers(timeout: float = 20) -> bool:
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _dockerd_running() -> bool:
    """A dockerd whose pidfile names a live process: one starting up, not to be started twice
    (a second one refuses the same pidfile anyway)."""
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def ensure_engine(deadline_s: float = 90) -> None:
    """Return once `docker info` answers; start dockerd first where root can and none runs.

    Raises EngineUnavailable when no engine can be had: no docker client, an engine elsewhere
    (DOCKER_HOST) that does not answer, no dockerd installed, or not root and nothing listening.
    """
    if shutil.which("docker") is None:
        raise EngineUnavailable("no docker client (apt-get install docker.io)")
    if engine_answers():
        return
    if os.environ.get("DOCKER_HOST"):
        raise EngineUnavailable(f"the engine at DOCKER_HOST={os.environ['DOCKER_HOST']} is down")
    if not _dockerd_running():
        if os.geteuid() != 0:
            raise EngineUnavailable("no engine answers and only root can start dockerd here")
        dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
        if dockerd is None:
            raise EngineUnavailable("dockerd is not installed (apt-get install docker.io)")
        DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DOCKERD_LOG, "ab") as out:
            # Its own session: the engine outlives this process (and the test session), so
            # the next run finds it up and its image cache warm.
            subprocess.Popen(
                [dockerd, *DOCKERD_FLAGS],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log(f"started dockerd {' '.join(DOCKERD_FLAGS)}; its log: {DOCKERD_LOG}")
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if engine_answers(timeout=10):
            return
        time.sleep(1)
    tail = DOCKERD_LOG.read_text(errors="replace")[-1500:] if DOCKERD_LOG.exists() else ""
    raise EngineUnavailable(f"dockerd did not answer within {deadline_s:.0f}s; log tail:\n{tail}")


def image_label(tag: str, label: str) -> str | None:
    """The image's label value ("" when unlabelled), or None when there is no such image."""
    done = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if done.returncode != 0:
        return None
    return (json.loads(done.stdout) or {}).get(label, "")


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode == 0


def image_id(tag: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


# -- the Debian base --------------------------------------------------------------------------


def _source_entries(apt_dir: Path) -> Iterator[tuple[list[str], list[str]]]:
    """(URIs, suites) of every `deb` source apt has, one-line and deb822 formats alike."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield [words[1]], [words[2]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" in fields.get("types", "").split():
                yield fields.get("uris", "").split(), fields.get("suites", "").split()


def debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The Debian archive this machine's apt already uses (GPUJOBS_DEBIAN_MIRROR overrides):
    the source that carries `suite` itself, else any source whose path is /debian."""
    if override := os.environ.get("GPUJOBS_DEBIAN_MIRROR"):
        return override
    entries = list(_source_entries(apt_dir))
    for uris, suites in entries:
        if suite in suites and uris:
            return uris[0]
    for uris, _ in entries:
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise EngineUnavailable(
        f"no Debian archive among apt's sources in {apt_dir}; set GPUJOBS_DEBIAN_MIRROR"
    )


def build_debian_base() -> None:
    """debootstrap a minimal bookworm with Python, and import it as BASE_IMAGE."""
    if os.geteuid() != 0:
        raise EngineUnavailable(f"{BASE_IMAGE} is missing and only root can debootstrap it")
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if debootstrap is None:
        raise EngineUnavailable(f"{BASE_IMAGE} is missing: apt-get install debootstrap")
    mirror = debian_mirror()
    cache = cache_dir()
    debs = cache / "debs"  # the .deb files, kept: a re-bootstrap downloads nothing
    debs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix="rootfs-") as scratch:
        root = Path(scratch) / "root"
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                f"--cache-dir={debs}",
                SUITE,
                str(root),
                mirror,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        # apt's package lists and the host's resolver settings have no place in an image.
        for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        for path in ("etc/resolv.conf", "etc/hostname"):
            (root / path).unlink(missing_ok=True)
        log(f"debootstrap {SUITE} from {mirror}: {time.monotonic() - started:.0f}s")
        # tar | docker import: the rootfs is streamed, never written out as an archive.
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        try:
            imported = subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--change",
                    "ENV LANG=C.UTF-8",
                    "--change",
                    'CMD ["/bin/bash"]',
                    "-",
                    BASE_IMAGE,
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar_status = tar.wait()
        if tar_status != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import {BASE_IMAGE} failed: {imported.stderr[-2000:]}")
    log(f"{BASE_IMAGE} imported: {time.monotonic() - started:.0f}s in all")


# -- the wheels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The base image's Python, for pip to download wheels that it (not this host) can install."""

    python: str  # "3.11"
    glibc: str  # "2.36"
    machine: str  # "x86_64"

    def pip_flags(self) -> list[str]:
        # pip takes manylinux_2_X tags as given (no older ones implied), so each glibc level the
        # base can run is named; manylinux2014 brings manylinux2010 and manylinux1 along.
        major, minor = (int(part) for part in self.glibc.split(".")[:2])
        platforms = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        platforms.append(f"manylinux2014_{self.machine}")
        abi = "cp" + self.python.replace(".", "")
        flags = ["--python-version", self.python, "--implementation", "cp", "--abi", abi]
        for platform in platforms:
            flags += ["--platform", platform]
        return flags


def base_target(image: str = BASE_IMAGE) -> Target:
    probe = (
        "import platform, sys; "
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}', platform.libc_ver()[1], "
        "platform.machine())"
    )
    out = docker("run", "--rm", "--network", "none", image, "python3", "-c", probe).stdout
    python, glibc, machine = out.split()
    return Target(python, glibc, machine)


def dockerfile_requirements(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The quoted requirements the Dockerfile's `pip install` names beside -r requirements.txt
    (tensorboard), so the wheel folder follows the Dockerfile instead of a copy of its list."""
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("RUN ") and "pip install " in line:
            after = line.split("pip install ", 1)[1]
            return re.findall(r'"([A-Za-z0-9][^"]*)"', after)
    return []


def pip_download_args() -> list[str]:
    """What the image's `pip install` resolves: jobs/requirements.txt and the Dockerfile's extra
    requirements, with torch held to the CPU build constraints.txt pins."""
    return [
        "-c",
        str(REPO / "constraints.txt"),
        "-r",
        str(REPO / "jobs" / "requirements.txt"),
        *dockerfile_requirements(),
    ]


def wheels_key(target: Target) -> str:
    recipe = {
        "requirements": (REPO / "jobs" / "requirements.txt").read_text(),
        "constraints": (REPO / "constraints.txt").read_text(),
        "extra": dockerfile_requirements(),
        "target": [target.python, target.glibc, target.machine],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def download_wheels(target: Target) -> Path:
    """The wheel folder for this recipe, downloaded once: a folder appears whole (renamed into
    place) or not at all, and older recipes' folders are removed."""
    cache = cache_dir()
    key = wheels_key(target)
    folder = cache / f"wheels-{key}"
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix="download-"))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                *target.pip_flags(),
                "-d",
                str(scratch),
                *pip_download_args(),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{(done.stdout + done.stderr)[-3000:]}")
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for old in cache.glob("wheels-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    log(f"wheels for {target} in {folder}: {time.monotonic() - started:.0f}s")
    return folder


def build_wheels_image(wheels: Path, key: str) -> None:
    started = time.monotonic()
    recipe = f"FROM {BASE_IMAGE}\nCOPY . {WHEELS_IN_IMAGE}/\n"
    done = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "none",
            "--label",
            f"{WHEELS_LABEL}={key}",
            "-t",
            WHEELS_IMAGE,
            "-f",
            "-",
            str(wheels),
        ],
        input=recipe,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {WHEELS_IMAGE} failed:\n{done.stderr[-3000:]}")
    log(f"{WHEELS_IMAGE} built: {time.monotonic() - started:.0f}s")


def ensure_test_base() -> str:
    """The offline base docker/Dockerfile builds on (with WHEELS=/opt/wheels), made where it is
    missing or out of date; returns its tag."""
    with machine_lock():
        if not image_exists(BASE_IMAGE):
            build_debian_base()
        target = base_target()
        # The wheels image is out of date when the recipe changed or the Debian base was
        # re-imported under it.
        key = f"{wheels_key(target)}@{image_id(BASE_IMAGE)}"
        if image_label(WHEELS_IMAGE, WHEELS_LABEL) != key:
            build_wheels_image(download_wheels(target), key)
    return WHEELS_IMAGE


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    started = time.monotonic()
    try:
        ensure_engine()
        tag = ensure_test_base()
    except EngineUnavailable as error:
        log(f"no offline base: {error}")
        return 1
    log(f"{tag} ready: {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
