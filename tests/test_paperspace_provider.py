"""The Paperspace provider against a fake of its REST API (respx, the API's response shapes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gpujobs.errors import (
    NoCapacityError,
    NotTerminatedError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
)
from gpujobs.providers.base import Provider, SupportsQuotaReport
from gpujobs.providers.catalog import parse_catalog
from gpujobs.providers.paperspace import PaperspaceProvider
from gpujobs.retry import ATTEMPTS
from gpujobs.spec import JobSpec
from gpujobs.testing import FakeClock
from gpujobs.testing.paperspace import FakePaperspace

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJobKeyForTests gpujobs-job"
CATALOG = parse_catalog(
    {
        "provider": "paperspace",
        "as_of": "2026-01-01",
        "source": "test",
        "instance_types": [
            {
                "name": "A4000",
                "gpu": "A4000",
                "gpus": 1,
                "cpus": 8,
                "memory_gb": 45,
                "prices": {"ny2": [0.76, None], "ams1": [0.76, None]},
            },
            {
                "name": "A100-80G",
                "gpu": "A100",
                "gpus": 1,
                "cpus": 12,
                "memory_gb": 90,
                "prices": {"ny2": [3.18, None]},
            },
        ],
    }
)
A4000_NY2 = next(o for o in CATALOG.offers if (o.instance_type, o.region) == ("A4000", "ny2"))


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)
        self.on_sleep()


@pytest.fixture
def fake() -> FakePaperspace:
    return FakePaperspace()


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


def provider(fake: FakePaperspace, clock: FakeClock, **settings: object) -> PaperspaceProvider:
    options: dict[str, object] = {"api_key": fake.api_key, **settings}
    return PaperspaceProvider(
        catalog=CATALOG,
        transport=fake.transport(),
        caller_address=lambda: "198.51.100.7",
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def paperspace_home(files: dict[str, str]) -> Path:
    folder = Path.home() / ".paperspace"  # HOME is a per-test folder (conftest)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# -- credentials (no network) -------------------------------------------------------------------
def test_check_finds_the_environment_variable(fake, clock, monkeypatch):
    monkeypatch.setenv("PAPERSPACE_API_KEY", "env-secret")
    credentials = provider(fake, clock, api_key=None).check()
    assert credentials.ok and credentials.found == "API key from PAPERSPACE_API_KEY"
    assert "env-secret" not in credentials.model_dump_json()
    assert fake.requests == []


def test_check_finds_the_pspace_cli_files_for_the_current_team(fake, clock, monkeypatch):
    monkeypatch.delenv("PAPERSPACE_API_KEY", raising=False)
    paperspace_home(
        {
            "config.toml": 'version = 1\nteam = "mylab"\n',
            "credentials.toml": 'version = 1\n[keys]\nother = "k-other"\nmylab = "k-mylab"\n',
        }
    )
    ps = provider(fake, clock, api_key=None)
    credentials = ps.check()
    assert credentials.ok and "credentials.toml (team mylab)" in credentials.found
    assert fake.requests == []
    fake.api_key = "k-mylab"  # the API accepts only the current team's key
    assert ps.owned() == []


def test_check_finds_the_legacy_cli_config(fake, clock, monkeypatch):
    monkeypatch.delenv("PAPERSPACE_API_KEY", raising=False)
    paperspace_home({"config.json": json.dumps({"apiKey": "legacy-secret", "name": "me"})})
    credentials = provider(fake, clock, api_key=None).check()
    assert credentials.ok and credentials.found == "API key from ~/.paperspace/config.json"


def test_check_says_what_to_set_when_nothing_is_found(fake, clock, monkeypatch):
    monkeypatch.delenv("PAPERSPACE_API_KEY", raising=False)
    ps = provider(fake, clock, api_key=None)
    credentials = ps.check()
    assert not credentials.ok and "PAPERSPACE_API_KEY" in credentials.missing
    assert "pspace login" in credentials.missing
    with pytest.raises(ProviderAuthError, match="PAPERSPACE_API_KEY"):
        ps.provision("job1", A4000_NY2, KEY, 1)
    assert fake.requests == []


def test_check_asks_for_a_team_when_the_cli_holds_several(fake, clock, monkeypatch):
    monkeypatch.delenv("PAPERSPACE_API_KEY", raising=False)
    paperspace_home({"credentials.toml": '[keys]\na = "k1"\nb = "k2"\n'})
    credentials = provider(fake, clock, api_key=None).check()
    assert not credentials.ok and "pspace config set team" in credentials.missing
    assert "k1" not in credentials.missing and "k2" not in credentials.missing


# -- planning ------------------------------------------------------------------------------------
def test_offers_come_from_the_catalog_and_quota_needs_no_call(fake, clock):
    ps = provider(fake, clock)
    assert {o.instance_type for o in ps.offers(JobSpec.model_validate(_spec()).resources)} == {
        "A4000"
    }
    quota = ps.quota(A4000_NY2)
    assert quota.limit is None and quota.per_node == 1.0
    assert "no quota system" in quota.name
    assert fake.requests == []


def test_quotas_report_availability_per_region(fake, clock):
    fake.unavailable.add(("A4000", "ams1"))
    ps = provider(fake, clock)
    assert isinstance(ps, SupportsQuotaReport)
    report = {(q.region, q.code): q.limit for q in ps.quotas("a4000")}
    assert report == {("ams1", "availability/A4000"): 0.0, ("ny2", "availability/A4000"): 1.0}


# -- provisioning --------------------------------------------------------------------------------
def test_provision_creates_a_script_and_machines_with_the_right_body(fake, clock):
    spec = JobSpec.model_validate(_spec(max_hours=2.5, disk_gb=200))
    unconfigured = provider(fake, clock)
    ps = unconfigured.for_spec(spec)
    assert isinstance(ps, Provider) and unconfigured.max_hours is None
    nodes = ps.provision("job1", A4000_NY2, KEY, 2)

    assert [n.node_id for n in nodes] == [m["id"] for m in fake.live_machines()]
    (script,) = fake.scripts.values()
    (network,) = fake.networks.values()
    assert script["name"] == "gpujobs-job1" and script["isRunOnce"] is True
    assert KEY in script["script"]
    assert 'SHUTDOWN_MINUTES="151"' in script["script"]  # ceil(2.5 h) in minutes, plus one
    assert "shutdown -h" in script["script"]
    assert script["script"].startswith("#!/bin/bash\n# gpujobs (paperspace): SSH by key only")
    assert "PasswordAuthentication no" in script["script"]
    syntax = subprocess.run(["bash", "-n"], input=script["script"], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    bodies = [call.body for call in fake.calls("POST /machines")]
    assert [b["name"] for b in bodies] == ["gpujobs-job1-0", "gpujobs-job1-1"]
    assert bodies[0] == {
        "name": "gpujobs-job1-0",
        "machineType": "A4000",
        "templateId": "tml0box22",  # ML-in-a-Box on Ubuntu 22.04, looked up by name
        "region": "ny2",
        "diskSize": 250,  # 200 GB rounded up to a size Paperspace offers
        "publicIpType": "dynamic",
        "startupScriptId": script["id"],
        "networkId": network["id"],  # two nodes: a private network of the job's own
        "autoShutdownEnabled": True,
        "autoShutdownTimeout": 3,
        "autoShutdownForce": True,
        "startOnCreate": True,
        "emailPassword": False,
    }
    assert all(n.host == "" and n.user == "paperspace" and n.price_per_hour == 0.76 for n in nodes)


def test_provision_without_max_hours_leaves_auto_shutdown_off(fake, clock):
    provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    (body,) = [call.body for call in fake.calls("POST /machines")]
    assert body["autoShutdownEnabled"] is False and "autoShutdownTimeout" not in body
    assert body["diskSize"] == 100


def test_provision_is_idempotent(fake, clock):
    ps = provider(fake, clock)
    first = ps.provision("job1", A4000_NY2, KEY, 2)
    again = ps.provision("job1", A4000_NY2, KEY, 2)
    assert [n.node_id for n in again] == [n.node_id for n in first]
    assert len(fake.calls("POST /machines")) == 2
    assert len(fake.calls("POST /startup-scripts")) == 1


def test_a_create_whose_answer_was_lost_is_found_not_repeated(fake, clock):
    fake.fail("POST /machines", status=502, after=True)  # made, then the answer is lost
    nodes = provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert len(fake.live_machines()) == 1 and nodes[0].node_id == fake.live_machines()[0]["id"]
    assert len(fake.calls("POST /machines")) == 1


def test_unavailable_machine_type_is_no_capacity_and_creates_nothing(fake, clock):
    fake.unavailable.add(("A4000", "ny2"))
    with pytest.raises(NoCapacityError, match="paperspace says A4000 is not available in ny2"):
        provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert fake.machines == {} and fake.scripts == {}


def test_a_refusal_after_the_script_was_made_cleans_it_up(fake, clock):
    fake.fail("POST /machines", status=400, message="Billing: a valid payment method is required")
    with pytest.raises(ProvisioningError, match="payment method") as raised:
        provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert not isinstance(raised.value, NoCapacityError)
    assert fake.scripts == {} and fake.live_machines() == []


def test_capacity_refusal_on_the_second_node_removes_the_first(fake, clock):
    fake.fail("POST /machines", status=400, message="Out of capacity for A4000 in NY2", skip=1)
    with pytest.raises(NoCapacityError, match="Out of capacity"):
        provider(fake, clock).provision("job1", A4000_NY2, KEY, 2)
    assert len(fake.calls("POST /machines")) == 2
    assert fake.machines == {} and fake.scripts == {} and fake.networks == {}


def test_no_usable_template_is_a_clear_error(fake, clock):
    fake.templates = [t for t in fake.templates if "22.04" not in t["operatingSystemLabel"]]
    with pytest.raises(ProvisioningError, match="ML-in-a-Box/GPU OS template for A4000"):
        provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert fake.machines == {} and fake.scripts == {}


@pytest.mark.parametrize("count", [1, 2, 4])
def test_the_nodes_of_a_job_meet_on_a_private_network_of_their_own(fake, clock, count):
    other = fake.add_machine("someone-elses", privateIp="10.0.0.9")
    ps = provider(fake, clock)
    nodes = ps.wait_ready(ps.provision("grp1", A4000_NY2, KEY, count))
    assert [node.rank for node in nodes] == list(range(count))
    mine = [m for m in fake.live_machines() if m["id"] != other]
    if count == 1:  # one node: no network made, the machine stays on the team's default
        assert fake.networks == {} and "networkId" not in fake.calls("POST /machines")[0].body
    else:
        (network,) = fake.networks.values()
        assert (network["name"], network["region"]) == ("gpujobs-grp1", "ny2")
        assert {m["networkId"] for m in mine} == {network["id"]}
        prefix = network["network"].rsplit(".", 1)[0]
        private = [node.private_host for node in nodes]
        assert all(address and address.startswith(f"{prefix}.") for address in private)
        assert len(set(private)) == count and "10.0.0.9" not in private
    assert all(node.host.startswith("203.0.113.") for node in nodes)
    # No firewall API: the node's own filter admits SSH from the caller alone and, for a group,
    # everything from its private network (the rendezvous and NCCL ports) and nothing else.
    (script,) = fake.scripts.values()
    assert "SSH_FROM=198.51.100.7/32" in script["script"]
    if count > 1:
        assert f"GROUP_CIDR={prefix}.0/24" in script["script"]
    else:
        assert "GROUP_CIDR=''" in script["script"]
    ps.terminate(nodes)
    assert fake.networks == {} and fake.scripts == {}
    assert [m["id"] for m in fake.live_machines()] == [other]


def test_a_network_left_by_a_crash_is_found_and_removed_after_its_machines(fake, clock):
    ps = provider(fake, clock)
    ps.provision("grp2", A4000_NY2, KEY, 2)
    kinds = [resource.kind for resource in ps.tagged()]
    assert kinds == ["machine", "machine", "startup-script", "private-network"]
    for resource in ps.tagged():  # gc's order: the machines first, so the network can go
        ps.delete(resource)
    assert fake.live_machines() == [] and fake.scripts == {} and fake.networks == {}


# -- waiting -------------------------------------------------------------------------------------
def test_wait_ready_fills_in_the_address_and_login(fake, clock):
    ps = provider(fake, clock)
    nodes = ps.wait_ready(ps.provision("job1", A4000_NY2, KEY, 2))
    assert all(n.host.startswith("203.0.113.") for n in nodes)
    node = nodes[0]
    assert (node.port, node.user, node.runtime, node.uses_job_key) == (
        22,
        "paperspace",
        "docker",
        True,
    )
    assert (
        node.workdir == "/opt/gpujobs/work/job1"
        and node.ready_file == "/opt/gpujobs/bootstrap.done"
    )
    assert (node.instance_type, node.region, node.spot) == ("A4000", "ny2", False)
    assert clock.sleeps == [10.0]  # one poll interval: ready on the second read


def test_losses_report_a_machine_turned_off_mid_run(fake, clock):
    ps = provider(fake, clock)
    nodes = ps.wait_ready(ps.provision("job1", A4000_NY2, KEY, 2))
    assert ps.losses(nodes) == []
    fake.power_off(nodes[1].node_id)
    [loss] = ps.losses(nodes)
    assert loss.node_id == nodes[1].node_id and not loss.preempted and "off" in loss.reason


def test_a_machine_that_turns_off_while_starting_is_no_capacity(fake, clock):
    fake.ready_after_polls = 99
    ps = provider(fake, clock)
    nodes = ps.provision("job1", A4000_NY2, KEY, 1)
    clock.on_sleep = lambda: fake.power_off(nodes[0].node_id)  # off after it was seen starting
    with pytest.raises(NoCapacityError, match="turned off while starting"):
        ps.wait_ready(nodes)
    assert clock.sleeps == [10.0]


def test_wait_ready_has_a_deadline(fake, clock):
    fake.ready_after_polls = 10_000
    ps = provider(fake, clock, ready_timeout_s=60.0)
    nodes = ps.provision("job1", A4000_NY2, KEY, 1)
    with pytest.raises(NoCapacityError, match=r"not ready after 60 s: ps\d+ \(starting\)"):
        ps.wait_ready(nodes)
    assert clock.monotonic() == pytest.approx(60.0)


# -- teardown ------------------------------------------------------------------------------------
def test_terminate_deletes_machines_then_the_script_and_is_idempotent(fake, clock):
    ps = provider(fake, clock)
    nodes = ps.provision("job1", A4000_NY2, KEY, 2)
    ps.terminate(nodes[:1])  # the machine it was not told about is found by name
    assert fake.machines == {} and fake.scripts == {}
    ps.terminate(nodes)  # already gone: 404s are fine
    assert fake.machines == {} and fake.scripts == {}


def test_a_delete_refused_while_starting_is_asked_again(fake, clock):
    ps = provider(fake, clock)
    nodes = ps.provision("job1", A4000_NY2, KEY, 1)
    fake.fail("DELETE /machines/{id}", status=400, message="Machine is still provisioning")
    ps.terminate(nodes)
    assert len(fake.calls("DELETE /machines/{id}")) == 2
    assert fake.machines == {} and fake.scripts == {}


def test_terminate_raises_when_it_cannot_confirm(fake, clock):
    fake.gone_after_polls = 10_000
    ps = provider(fake, clock, terminate_timeout_s=30.0)
    nodes = ps.provision("job1", A4000_NY2, KEY, 1)
    with pytest.raises(NotTerminatedError, match=r"ps\d+ \(stopping\)"):
        ps.terminate(nodes)
    assert len(fake.scripts) == 1  # kept while its machine may still exist


# -- faults ---------------------------------------------------------------------------------------
def test_throttling_is_retried_honouring_retry_after(fake, clock):
    fake.fail("POST /machines", status=429, headers={"Retry-After": "7"}, times=2)
    fake.fail("GET /os-templates", status=429, headers={"Retry-After": "3600"})
    provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert clock.sleeps.count(7.0) == 2 and 30.0 in clock.sleeps  # capped at 30 s
    assert len(fake.live_machines()) == 1


def test_server_errors_on_reads_are_retried(fake, clock):
    fake.fail("GET /machines", status=503, times=2)
    fake.add_machine("gpujobs-job1-0")
    assert [n.job_id for n in provider(fake, clock).owned()] == ["job1"]
    assert len(fake.calls("GET /machines")) == 3


def test_a_refused_key_is_an_auth_error_that_never_shows_the_key(fake, clock):
    secret = "wrong-secret-key-123"
    ps = provider(fake, clock, api_key=secret)
    with pytest.raises(ProviderAuthError, match="PAPERSPACE_API_KEY") as raised:
        ps.provision("job1", A4000_NY2, KEY, 1)
    assert "HTTP 401 UNAUTHORIZED" in str(raised.value)
    assert secret not in str(raised.value) and secret not in repr(ps)
    assert secret not in repr(ps._api()) and secret not in repr(ps.check())


def test_an_api_message_echoing_the_key_is_scrubbed(fake, clock):
    fake.fail("POST /machines", status=400, message=f"bad request from {fake.api_key}")
    with pytest.raises(ProvisioningError) as raised:
        provider(fake, clock).provision("job1", A4000_NY2, KEY, 1)
    assert fake.api_key not in str(raised.value) and "***" in str(raised.value)


def test_the_client_has_timeouts_and_bearer_auth(fake, clock):
    ps = provider(fake, clock)
    ps.owned()
    request = fake.router.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {fake.api_key}"
    timeout = request.extensions["timeout"]
    assert (timeout["connect"], timeout["read"]) == (10.0, 30.0)


def test_a_hang_is_retried_then_a_clear_error(fake, clock):
    fake.fail("GET /machines", error=httpx.ReadTimeout, times=100)
    with pytest.raises(ProviderError, match=r"ReadTimeout.*status\.paperspace\.com"):
        provider(fake, clock).owned()
    assert len(fake.calls("GET /machines")) == ATTEMPTS


# -- what gpujobs owns -----------------------------------------------------------------------------
def test_owned_lists_gpujobs_machines_only_across_pages(clock):
    fake = FakePaperspace(page_size=2)
    fake.add_machine("my-own-workstation")
    for job, rank in [("job1", 0), ("job1", 1), ("my-job-2", 0), ("my-job-2", 3)]:
        fake.add_machine(f"gpujobs-{job}-{rank}", machineType="A4000", region="ny2")
    owned = provider(fake, clock).owned()
    assert sorted((n.job_id, n.rank) for n in owned) == [
        ("job1", 0),
        ("job1", 1),
        ("my-job-2", 0),
        ("my-job-2", 3),
    ]
    assert all(n.host == "203.0.113.200" and n.instance_type == "A4000" for n in owned)
    pages = fake.calls("GET /machines")
    assert [p.params.get("after") for p in pages] == [None, "2", "4"]  # 5 machines, 3 pages


def test_owned_startup_scripts(fake, clock):
    ps = provider(fake, clock)
    ps.provision("job1", A4000_NY2, KEY, 1)
    fake.scripts["ss-mine"] = {**next(iter(fake.scripts.values())), "id": "ss-mine", "name": "mine"}
    assert [s.name for s in ps.owned_startup_scripts()] == ["gpujobs-job1"]


def test_import_stays_light():
    code = (
        "import sys, gpujobs.providers.paperspace; "
        "heavy = [m for m in ('respx', 'boto3', 'google.cloud') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _spec(*, max_hours: float | None = None, disk_gb: float | None = None) -> dict:
    resources: dict[str, object] = {"gpu": "A4000"}
    if disk_gb:
        resources["disk_gb"] = disk_gb
    spec: dict[str, object] = {
        "name": "t",
        "command": "python train.py",
        "resources": resources,
        "providers": ["paperspace"],
    }
    if max_hours:
        spec["budget"] = {"max_hours": max_hours}
    return spec
