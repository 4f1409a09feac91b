"""`gpujobs image build/push`, private-registry logins and stray containers, with the real
engine where one is needed; the registry login through a stub `docker` that records what it
was given (no registry can be reached here)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpujobs.remote.transport import LocalTransport
from gpujobs.runtime.docker import DockerRuntime, workload_image_tag
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.runtime.registry import Login, log_in, login_for, registry_of
from gpujobs.spec import parse_spec
from tests import docker_base
from tests.conftest import gpujobs_cli, write_spec, write_stubs
from tests.docker_engine import DockerEngine

pytestmark = pytest.mark.timeout(1800)


def test_image_build_makes_the_content_tag_a_node_would(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    base = docker_base.ensure_test_base()
    wheels = docker_base.WHEELS_IN_IMAGE
    done = gpujobs_cli("image", "build", "--base", base, "--wheels", wheels, "--tag",
                       "gpujobs-workloads:mine", timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = workload_image_tag({"BASE": base, "WHEELS": wheels})
    assert done.stdout.strip() == "gpujobs-workloads:mine"
    for tag in (expected, "gpujobs-workloads:mine"):
        assert docker_engine.docker("image", "inspect", tag, check=False).returncode == 0, tag


def test_image_push_says_what_is_wrong(docker_engine: DockerEngine) -> None:
    refused = gpujobs_cli("image", "push", "--", "-not-a-repo")
    assert refused.returncode == 2 and "give REPO[:TAG]" in refused.stderr
    # Nothing listens on port 1: the push fails fast, with docker's own reason.
    tag = workload_image_tag({})
    docker_engine.docker("tag", "gpujobs-test-base:bookworm", tag)
    try:
        failed = gpujobs_cli("image", "push", "127.0.0.1:1/me/gpujobs", timeout=120)
        assert failed.returncode == 1 and "docker push failed" in failed.stderr
        assert "Traceback" not in failed.stderr
    finally:
        docker_engine.docker("rmi", tag, check=False)


def test_a_missing_registry_token_refuses_the_launch(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        name: private
        command: 'true'
        image: ghcr.io/me/private:1
        registry_auth: {server: ghcr.io, username: me, password_env: GPUJOBS_TEST_TOKEN}
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "GPUJOBS_TEST_TOKEN"}
    done = gpujobs_cli("launch", str(spec), env=env)
    assert done.returncode == 2
    assert "registry_auth.password_env: GPUJOBS_TEST_TOKEN is not set here" in done.stderr
    assert json.loads(gpujobs_cli("status", "--json").stdout) == []


def test_the_token_reaches_docker_login_on_stdin_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "docker-calls"
    stubs = write_stubs(
        tmp_path / "stubs",
        {"docker": f'echo "argv: $*" >> {record}; echo "stdin: $(cat)" >> {record}'},
    )
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    secret = "ghp_s3cr3t-token-value"
    login = Login("ghcr.io", "me", secret)
    assert secret not in repr(login)
    log_in(LocalTransport(), login)
    calls = record.read_text().splitlines()
    assert calls[0] == "argv: login --username me --password-stdin ghcr.io"
    assert calls[1] == f"stdin: {secret}"
    assert not list(Path("/tmp").glob("gpujobs-login-*")), "the secret file is gone"


def test_your_docker_login_serves_when_the_spec_names_none(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    import base64

    auth = base64.b64encode(b"me:tok3n").decode()
    (config / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"auth": auth}}}))
    spec = parse_spec(
        "name: p\ncommand: 'true'\nimage: ghcr.io/me/x:1\n", label="s.yaml", base_dir=tmp_path
    )
    assert login_for(spec, config) == Login("ghcr.io", "me", "tok3n")
    public = parse_spec("name: p\ncommand: 'true'\nimage: ubuntu:24.04\n", label="s",
                        base_dir=tmp_path)  # fmt: skip
    assert login_for(public, config) is None and registry_of("ubuntu:24.04") is None


def test_gpus_are_asked_of_the_node_not_the_spec(tmp_path: Path) -> None:
    spec = parse_spec(
        "name: g\nworkload: mnist_cnn\nresources: {gpu: T4}\n", label="s.yaml", base_dir=tmp_path
    )
    runtime = DockerRuntime("job-1")
    layout = NodeLayout(str(tmp_path / "work" / "job-1"))
    assert "--gpus" in runtime.argv(spec, layout), "not asked yet: the spec's GPU decides"
    runtime.has_gpus = False  # what prepare() found on a CPU-only host
    assert "--gpus" not in runtime.argv(spec, layout)


def test_gc_lists_and_removes_a_stray_labelled_container(docker_engine: DockerEngine) -> None:
    created = docker_engine.docker(
        "create", "--label", "gpujobs-job=ghost-1a2b3c", "--label", docker_engine.label,
        "--network", "none", "gpujobs-test-base:bookworm", "true",
    )  # fmt: skip
    container = created.stdout.strip()[:12]
    try:
        listed = json.loads(gpujobs_cli("gc", "--json").stdout)
        text = json.dumps(listed)
        assert container in text and "container" in text
        swept = gpujobs_cli("gc", "--yes", "--include-unknown", "--json")
        assert swept.returncode == 0, swept.stderr
        gone = docker_engine.docker("ps", "-aq", "--filter", "label=gpujobs-job=ghost-1a2b3c")
        assert gone.stdout.strip() == ""
    finally:
        docker_engine.docker("rm", "-f", container, check=False)


def test_the_secret_file_on_the_node_is_private(tmp_path: Path, monkeypatch) -> None:
    seen = tmp_path / "mode"
    stubs = write_stubs(
        tmp_path / "stubs",
        {"docker": f'stat -c %a "$(ls /tmp/gpujobs-login-* | head -1)" > {seen}; cat >/dev/null'},
    )
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    log_in(LocalTransport(), Login("ghcr.io", "me", "x"))
    assert seen.read_text().strip() == oct(stat.S_IRUSR | stat.S_IWUSR)[2:]
