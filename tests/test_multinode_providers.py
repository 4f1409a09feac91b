"""The commands and environment a multi-node job's nodes get, for 1, 2 and 4 nodes on every
provider: the nodes are provisioned through each provider's own code (AWS on moto, GCP and
Paperspace on their fake APIs, ssh on real loopback sshd, local for one node), and what each rank
is started with is read from the runtime and environment the lifecycle would use for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from moto import mock_aws

from gpujobs.group import NodeGroup, rendezvous_port
from gpujobs.lifecycle.machine import runtime_for
from gpujobs.placement.planner import plan
from gpujobs.providers.aws import AwsProvider
from gpujobs.providers.base import Node
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.providers.local import LocalProvider
from gpujobs.providers.ssh import SshProvider
from gpujobs.remote.ssh import HostKeyPins
from gpujobs.runtime.base import job_environment
from gpujobs.runtime.docker import DEFAULT_IMAGE, DockerRuntime
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec, SshHosts, parse_spec
from gpujobs.testing import FakeClock
from gpujobs.testing.aws import AwsFakes
from gpujobs.testing.gcp import FakeComputeApi
from gpujobs.testing.paperspace import FakePaperspace
from gpujobs.testing.ssh import LoopbackSshd
from tests import test_aws_provider, test_gcp_provider, test_paperspace_provider

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJob gpujobs-job"
JOB = "grp-abc123"


def spec_for(count: int, *, gpu: bool, runtime: str = "auto") -> JobSpec:
    resources = "resources: {gpu: T4}\n" if gpu else ""
    text = f"name: grp\nworkload: mnist_cnn\nnodes: {count}\nruntime: {runtime}\n{resources}"
    return parse_spec(text, label="grp.yaml", base_dir=Path("."))


def aws_nodes(count: int) -> list[Node]:
    with mock_aws():
        fakes = AwsFakes(applied_quotas={("us-east-1", "L-DB2E81BA"): 64})
        aws = AwsProvider(
            catalog=test_aws_provider.small_catalog(),
            session_factory=fakes.session,
            caller_address=lambda: test_aws_provider.CALLER,
            clock=FakeClock(),
            settings=CloudNodeSettings(),
        )
        offer = test_aws_provider.offer(aws)
        return aws.wait_ready(aws.provision(JOB, offer, test_aws_provider.KEY, count))


def gcp_nodes(count: int) -> list[Node]:
    api = FakeComputeApi(project=test_gcp_provider.PROJECT)
    gcp = test_gcp_provider.provider(api, FakeClock())
    return gcp.wait_ready(gcp.provision(JOB, test_gcp_provider.offer(), KEY, count))


def paperspace_nodes(count: int) -> list[Node]:
    fake = FakePaperspace()
    ps = test_paperspace_provider.provider(fake, FakeClock())
    return ps.wait_ready(ps.provision(JOB, test_paperspace_provider.A4000_NY2, KEY, count))


@pytest.fixture
def sshds(
    sshd: LoopbackSshd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LoopbackSshd]]:
    """Four machines: the shared loopback sshd and three more that let in its client key."""
    public = Path(f"{sshd.client_key}.pub").read_text()
    with ExitStack() as stack:
        others = []
        for k in range(3):
            other = stack.enter_context(LoopbackSshd(tmp_path_factory.mktemp(f"sshd-{k}")))
            with (other.folder / "authorized_keys").open("a") as handle:
                handle.write(public)
            others.append(other)
        yield [sshd, *others]


def ssh_nodes(count: int, sshds: list[LoopbackSshd], pins: HostKeyPins, root: Path) -> list[Node]:
    hosts = SshHosts(
        hosts=[d.target for d in sshds], identity_file=str(sshds[0].client_key), workdir=str(root)
    )
    provider = SshProvider(hosts, pins)
    offer = next(o for o in provider.offers(spec_for(count, gpu=False).resources))
    return provider.wait_ready(provider.provision(JOB, offer, None, count))


def assert_started_as_a_group(spec: JobSpec, nodes: list[Node], meeting: list[str]) -> None:
    """Every rank's argv and environment, against the addresses the nodes meet at."""
    count = len(nodes)
    group = NodeGroup.of(JOB, spec, nodes)
    port = str(rendezvous_port(JOB))
    assert list(group.addresses) == meeting and group.head == meeting[0]
    for node in sorted(nodes, key=lambda n: n.rank):
        rank = node.rank
        runtime = runtime_for(node, spec)
        layout = NodeLayout(node.workdir)
        argv = runtime.argv(spec, layout, group, rank)
        env = job_environment(JOB, spec, layout, group, rank)
        assert env["GPUJOBS_NODE_RANK"] == str(rank) and env["GPUJOBS_NUM_NODES"] == str(count)
        assert env["GPUJOBS_HEAD_ADDR"] == meeting[0] and env["GPUJOBS_HEAD_PORT"] == port
        assert env["GPUJOBS_NODE_ADDRS"] == ",".join(meeting)
        assert env["GPUJOBS_GPUS_PER_NODE"] == "1"
        docker = isinstance(runtime, DockerRuntime)
        if count == 1:  # one process: started exactly as a single-node job always was
            assert "torch.distributed.run" not in argv and "--network" not in argv
            before = argv[argv.index("jobs.mnist_cnn") - 1]
            assert before == (DEFAULT_IMAGE if docker else "-m")
            continue
        torchrun = [
            "torch.distributed.run", "--nnodes", str(count), "--nproc-per-node", "1",
            "--node-rank", str(rank), "--master-addr", meeting[0], "--master-port", port,
            "-m", "jobs.mnist_cnn",
        ]  # fmt: skip
        at = argv.index("torch.distributed.run")
        assert argv[at : at + len(torchrun)] == torchrun
        if docker:
            # The image's entrypoint is `python -m`; the host's network carries the rendezvous.
            assert argv[at - 1] == (spec.image or DEFAULT_IMAGE)
            assert argv[argv.index("--network") + 1] == "host"
            for name in env:
                if name.startswith("GPUJOBS_NODE") or name.startswith("GPUJOBS_HEAD"):
                    assert argv[argv.index(name) - 1] == "-e"
        else:
            assert argv[at - 1] == "-m"


@pytest.mark.parametrize("count", [1, 2, 4])
def test_aws_nodes_meet_at_their_private_addresses(count: int) -> None:
    nodes = aws_nodes(count)
    assert [n.rank for n in nodes] == list(range(count))
    assert all(n.runtime == "docker" and n.private_host != n.host for n in nodes)
    assert_started_as_a_group(spec_for(count, gpu=True), nodes, [n.private_host for n in nodes])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_gcp_nodes_meet_at_their_vpc_addresses(count: int) -> None:
    nodes = gcp_nodes(count)
    assert all(n.runtime == "docker" and n.private_host.startswith("10.128.") for n in nodes)
    assert_started_as_a_group(spec_for(count, gpu=True), nodes, [n.private_host for n in nodes])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_paperspace_nodes_meet_on_the_jobs_private_network(count: int) -> None:
    nodes = paperspace_nodes(count)
    assert all(n.runtime == "docker" and n.private_host for n in nodes)
    assert_started_as_a_group(spec_for(count, gpu=True), nodes, [n.private_host for n in nodes])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_ssh_nodes_meet_at_the_hosts_the_spec_lists(
    count: int, sshds: list[LoopbackSshd], pins: HostKeyPins, tmp_path: Path
) -> None:
    nodes = ssh_nodes(count, sshds, pins, tmp_path / "lab")
    # One node per host, in the spec's order; each its own folder even on a shared home.
    assert [n.port for n in nodes] == [d.port for d in sshds[:count]]
    assert len({n.workdir for n in nodes}) == count
    assert all(n.runtime == "venv" and n.private_host is None for n in nodes)
    # `runtime: host`: the venv runtime's argv needs its venv built first (the same
    # workload_argv follows; tests/test_venv_runtime.py builds one for real).
    spec = spec_for(count, gpu=False, runtime="host")
    assert_started_as_a_group(spec, nodes, [n.host for n in nodes])


def test_local_runs_one_node_and_says_so_for_more(tmp_path: Path) -> None:
    local = LocalProvider(tmp_path / "local")
    [node] = local.provision(JOB, local.offers(spec_for(1, gpu=False).resources)[0], None, 1)
    assert_started_as_a_group(spec_for(1, gpu=False), [node], [node.host])
    two = spec_for(2, gpu=False)
    planned = plan(two, {"local": local})
    assert planned.placements == []
    assert [r.reason for r in planned.rejected] == ["runs at most 1 node(s), the spec asks for 2"]
