"""`gpujobs gc`: orphans of finished or unknown jobs on AWS (moto), GCP (the fake Compute API),
Paperspace (the fake REST API) and local work directories are listed with age and cost and
deleted with --yes; live and driver-lost jobs are left alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws
from typer.testing import CliRunner

from gpujobs.api.controller import Controller
from gpujobs.cli.app import create_app
from gpujobs.driver_lock import DriverLock
from gpujobs.paths import HomeLayout
from gpujobs.placement.gc import UNKNOWN_JOB, sweep_plan
from gpujobs.providers.aws import AwsProvider
from gpujobs.providers.base import TAG_KEY, Offer, Provider, SupportsSweep
from gpujobs.providers.catalog import Catalog, parse_catalog
from gpujobs.providers.gcp import GcpProvider
from gpujobs.providers.local import LocalProvider
from gpujobs.providers.paperspace import PaperspaceProvider
from gpujobs.spec import Resources
from gpujobs.state import Billing, JobState, Store
from gpujobs.testing import FakeClock
from gpujobs.testing.aws import AwsFakes, tagged_leftovers
from gpujobs.testing.gcp import FakeComputeApi
from gpujobs.testing.paperspace import FakePaperspace

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ3cJ1ACMbUrsVtq3T1X1WhzqoFYr8MfFSeulmyX8Nm job"
CALLER = "203.0.113.7"
AWS_REGIONS = ["us-east-1", "us-west-2"]
HOUR = 3600.0


def catalog(provider: str, name: str, region: str, price: float, **row: object) -> Catalog:
    return parse_catalog(
        {
            "provider": provider,
            "as_of": "2026-11-01",
            "source": "test",
            "instance_types": [
                {"name": name, "gpu": "T4", "gpus": 1, "cpus": 4, "memory_gb": 16,
                 "prices": {region: [price, None]}, **row},
            ],
        }
    )  # fmt: skip


AWS_CATALOG = catalog("aws", "g4dn.xlarge", "us-east-1", 0.526)
GCP_CATALOG = catalog(
    "gcp", "n1-standard-4", "us-central1", 0.54, zones={"us-central1": ["us-central1-a"]}
)
PS_CATALOG = catalog("paperspace", "A4000", "ny2", 0.76)


def only_offer(provider: Provider) -> Offer:
    [found] = provider.offers(Resources())
    return found


@pytest.fixture
def clock() -> FakeClock:
    # Ahead of real time: moto stamps LaunchTime with the real clock, so instances look 2 h old.
    return FakeClock(start=time.time() + 2 * HOUR)


@pytest.fixture
def fakes() -> Iterator[AwsFakes]:
    with mock_aws():
        yield AwsFakes()


@pytest.fixture
def aws(fakes: AwsFakes, clock: FakeClock) -> AwsProvider:
    return AwsProvider(
        catalog=AWS_CATALOG,
        session_factory=fakes.session,
        caller_address=lambda: CALLER,
        clock=clock,
    )


@pytest.fixture
def api(clock: FakeClock) -> FakeComputeApi:
    adc = Path.home() / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True, exist_ok=True)  # HOME is a per-test folder (conftest)
    adc.write_text('{"type": "authorized_user"}')
    fake = FakeComputeApi(project="test-project", now=clock.now)
    fake.set_quota("us-central1", "NVIDIA_T4_GPUS", 4)
    fake.set_global_quota("GPUS_ALL_REGIONS", 4)
    return fake


def gcp_provider(api: FakeComputeApi, clock: FakeClock) -> GcpProvider:
    return GcpProvider(
        project=api.project,
        catalog=GCP_CATALOG,
        client_factory=api.client_factory,
        caller_address=lambda: CALLER,
        clock=clock,
    )


def paperspace(fake: FakePaperspace, clock: FakeClock, key: str | None = None) -> Provider:
    return PaperspaceProvider(
        api_key=key or fake.api_key,
        catalog=PS_CATALOG,
        transport=fake.transport(),
        caller_address=lambda: CALLER,
        clock=clock,
    )


def add_job(store: Store, job_id: str, state: JobState, clock: FakeClock) -> None:
    store.create_job(
        job_id=job_id,
        name=job_id.rsplit("-", 1)[0],
        spec_json="{}",
        spec_path="/nowhere/spec.yaml",
        runs_dir="/nowhere/runs",
        driver_pid=None,
        now=clock.now() - 2 * HOUR,
    )
    if state is not JobState.PENDING:
        store.transition(job_id, state, "set by the test", now=clock.now() - HOUR)


def gc(
    home: HomeLayout, store: Store, clock: FakeClock, providers: dict[str, Provider], *args: str
):
    controller = Controller(home, store, lambda: providers, clock=clock)
    app = create_app(lambda: controller)
    done = CliRunner().invoke(app, ["gc", *args], env={"COLUMNS": "160"})
    assert "Traceback" not in done.output, done.output
    return done


def by_kind(items: list[dict]) -> dict[str, dict]:
    return {item["kind"]: item for item in items}


def test_a_crashed_aws_launch_is_listed_with_age_and_cost_and_deleted_with_yes(
    home, store, clock, aws, fakes
) -> None:
    job = "crash-a1b2c3"
    add_job(store, job, JobState.FAILED, clock)
    [node] = aws.provision(job, only_offer(aws), KEY, 1)
    billing = Billing("g4dn.xlarge", "us-east-1", False, 0.526, started_at=clock.now() - 2 * HOUR)
    store.add_node(job, node_id=node.node_id, provider="aws", node_json="{}", billing=billing)
    providers = {"aws": aws}

    listed = gc(home, store, clock, providers, "--json")  # no TTY, no --yes: list only
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    assert set(report) == {"orphans", "driver_lost", "problems", "dataset_cache"}
    orphans = by_kind(report["orphans"])
    assert set(orphans) == {"instance", "security-group", "key-pair"}
    assert {item["job_id"] for item in orphans.values()} == {job}
    assert {item["job_state"] for item in orphans.values()} == {"FAILED"}
    instance = orphans["instance"]
    assert (instance["id"], instance["region"]) == (node.node_id, "us-east-1")
    assert instance["age_s"] == pytest.approx(2 * HOUR, abs=120)
    assert instance["cost_usd"] == pytest.approx(2 * 0.526), "the ledger's own figure"
    assert orphans["key-pair"]["id"] == f"gpujobs-{job}" and orphans["key-pair"]["cost_usd"] == 0
    assert "run gpujobs gc --yes to delete them" in listed.stderr
    assert len(tagged_leftovers(fakes.session(), AWS_REGIONS, TAG_KEY)) == 3, "nothing deleted"

    table = gc(home, store, clock, providers)
    assert node.node_id in table.stdout and "crash-a1b2c3" in table.stdout
    assert "3 orphaned resource(s), $1.05 so far" in table.stdout

    swept = gc(home, store, clock, providers, "--yes", "--json")
    assert swept.exit_code == 0, swept.output
    result = json.loads(swept.stdout)
    assert set(by_kind(result["deleted"])) == {"instance", "security-group", "key-pair"}
    assert result["failed"] == []
    assert tagged_leftovers(fakes.session(), AWS_REGIONS, TAG_KEY) == []
    [entry] = store.ledger(job)
    assert entry.ended_at == clock.now(), "the ledger stops where gc deleted the instance"
    again = json.loads(gc(home, store, clock, providers, "--yes", "--json").stdout)
    assert again == {
        "orphans": [], "driver_lost": [], "problems": {}, "deleted": [], "failed": [],
        "dataset_cache": [],
    }  # fmt: skip


def test_unknown_jobs_only_when_asked_live_and_driver_lost_jobs_are_left_alone(
    home, store, clock, aws, fakes
) -> None:
    local = LocalProvider(home.work)
    stranger, live, lost, done = "stranger-000001", "live-111111", "lost-222222", "done-333333"
    add_job(store, live, JobState.RUNNING, clock)
    add_job(store, lost, JobState.RUNNING, clock)
    add_job(store, done, JobState.SUCCEEDED, clock)
    lock = DriverLock(home.lock_file(live))
    assert lock.acquire()
    for job in (stranger, live, lost):
        aws.provision(job, only_offer(aws), KEY, 1)
    for job in (live, done, stranger):
        local.provision(job, only_offer(local), None, 1)
    [lost_node] = [r for r in aws.tagged() if r.job_id == lost and r.kind == "instance"]
    billing = Billing("g4dn.xlarge", "us-east-1", False, 3.0, started_at=clock.now() - HOUR)
    store.add_node(lost, node_id=lost_node.resource_id, provider="aws", node_json="{}",
                   billing=billing)  # fmt: skip

    try:
        careful = gc(home, store, clock, {"aws": aws, "local": local}, "--yes", "--json")
        kept = {r.job_id for p in (aws, local) for r in p.tagged()}
        assert stranger in kept and done not in kept, "an unknown job's, only when asked"
        assert "--include-unknown deletes them too" in careful.stderr
        done_cli = gc(home, store, clock, {"aws": aws, "local": local}, "--yes", "--json",
                      "--include-unknown")  # fmt: skip
    finally:
        lock.release()
    assert done_cli.exit_code == 0, done_cli.output
    result = json.loads(done_cli.stdout)
    deleted = {(item["provider"], item["kind"], item["job_id"]) for item in result["deleted"]}
    assert deleted == {
        ("aws", "instance", stranger),
        ("aws", "security-group", stranger),
        ("aws", "key-pair", stranger),
        ("local", "workdir", stranger),
    }
    stranger_instance = by_kind([i for i in result["orphans"] if i["provider"] == "aws"])
    assert stranger_instance["instance"]["job_state"] == UNKNOWN_JOB
    assert stranger_instance["instance"]["cost_usd"] == pytest.approx(0.526 * 2, rel=0.05), (
        "no ledger for an unknown job: the catalog price times the instance's age"
    )
    lost_items = result["driver_lost"]
    assert {item["job_id"] for item in lost_items} == {lost} and len(lost_items) == 3
    assert {item["advice"] for item in lost_items} == {f"driver lost: run gpujobs down {lost}"}
    assert by_kind(lost_items)["instance"]["cost_usd"] == pytest.approx(3.0), "from the ledger"
    left = {(r.provider, r.job_id) for p in (aws, local) for r in p.tagged()}
    assert left == {("aws", live), ("aws", lost), ("local", live)}


def test_gcp_instance_and_firewall_rule_orphans_are_deleted(home, store, clock, api) -> None:
    gcp = gcp_provider(api, clock)
    job = "gan-c0ffee"
    add_job(store, job, JobState.CANCELLED, clock)
    gcp.provision(job, only_offer(gcp), KEY, 1)
    clock.advance(HOUR)

    listed = json.loads(gc(home, store, clock, {"gcp": gcp}, "--json").stdout)
    orphans = by_kind(listed["orphans"])
    assert set(orphans) == {"instance", "firewall-rule"}
    instance = orphans["instance"]
    assert (instance["id"], instance["region"]) == (f"gpujobs-{job}-0", "us-central1-a")
    assert instance["age_s"] == pytest.approx(HOUR, abs=60)
    assert instance["cost_usd"] == pytest.approx(0.54, rel=0.02)
    assert orphans["firewall-rule"]["id"] == f"gpujobs-{job}-ssh"

    result = json.loads(gc(home, store, clock, {"gcp": gcp}, "--yes", "--json").stdout)
    assert len(result["deleted"]) == 2 and result["failed"] == []
    assert api.instances == {} and api.firewalls == {}


def test_paperspace_machine_and_startup_script_orphans_are_deleted(home, store, clock) -> None:
    fake = FakePaperspace()
    ps = paperspace(fake, clock)
    ps.provision("unknown-abcdef", only_offer(ps), KEY, 1)
    assert len(fake.live_machines()) == 1 and len(fake.scripts) == 1

    done = gc(home, store, clock, {"paperspace": ps}, "--yes", "--json", "--include-unknown")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert {item["kind"] for item in result["deleted"]} == {"machine", "startup-script"}
    machine = by_kind(result["deleted"])["machine"]
    assert machine["region"] == "ny2" and machine["price_per_hour"] == 0.76
    assert fake.live_machines() == [] and fake.scripts == {}


def test_providers_without_credentials_or_answers_are_problems_not_errors(
    home, store, clock, monkeypatch
) -> None:
    monkeypatch.delenv("PAPERSPACE_API_KEY", raising=False)
    fake = FakePaperspace()
    providers: dict[str, Provider] = {
        "gcp": GcpProvider(project="test-project", catalog=GCP_CATALOG, clock=clock),  # no ADC
        "paperspace": paperspace(fake, clock, key="a-key-paperspace-refuses"),
        "local": LocalProvider(home.work),
    }
    done = gc(home, store, clock, providers, "--json")
    assert done.exit_code == 0, done.output
    problems = json.loads(done.stdout)["problems"]
    assert set(problems) == {"gcp", "paperspace"}
    assert problems["gcp"].startswith("skipped: no credentials") and "gcloud" in problems["gcp"]
    assert "PAPERSPACE_API_KEY" in problems["paperspace"]
    assert "a-key-paperspace-refuses" not in done.output
    assert "gcp: skipped: no credentials" in gc(home, store, clock, providers).stderr


def test_one_failed_deletion_does_not_stop_the_others_and_is_reported(
    home, store, clock, aws, fakes, api
) -> None:
    gcp = gcp_provider(api, clock)
    add_job(store, "half-1", JobState.FAILED, clock)
    [node] = aws.provision("half-1", only_offer(aws), KEY, 1)
    add_job(store, "half-2", JobState.CANCELLED, clock)
    gcp.provision("half-2", only_offer(gcp), KEY, 1)
    fakes.fail("TerminateInstances", ("InvalidParameterValue", "injected: cannot"), times=-1)

    done = gc(home, store, clock, {"aws": aws, "gcp": gcp}, "--yes", "--json")
    assert done.exit_code == 1, "a failed deletion fails the command, after all were tried"
    result = json.loads(done.stdout)
    failed = by_kind(result["failed"])
    assert set(failed) == {"instance", "security-group"}
    assert "injected: cannot" in failed["instance"]["error"]
    assert f"still used by instance(s) {node.node_id}" in failed["security-group"]["error"], (
        "the group fails at once, rather than waiting for an instance that is not going"
    )
    assert {(i["provider"], i["kind"]) for i in result["deleted"]} == {
        ("aws", "key-pair"),
        ("gcp", "instance"),
        ("gcp", "firewall-rule"),
    }
    assert api.instances == {} and api.firewalls == {}
    assert len(tagged_leftovers(fakes.session(), AWS_REGIONS, TAG_KEY)) == 2
    table = gc(home, store, clock, {"aws": aws}, "--yes")
    assert f"failed: aws instance {node.node_id} (us-east-1)" in table.stderr
    fakes.faults.clear()
    assert gc(home, store, clock, {"aws": aws}, "--yes").exit_code == 0, "a later gc finishes"
    assert tagged_leftovers(fakes.session(), AWS_REGIONS, TAG_KEY) == []


def test_the_plan_asks_providers_concurrently_and_skips_what_cannot_sweep(
    home, store, clock
) -> None:
    class NoSweep:
        name = "ssh"

    local = LocalProvider(home.work)
    assert isinstance(local, SupportsSweep) and not isinstance(NoSweep(), SupportsSweep)
    local.provision("mine-1", only_offer(local), None, 1)
    report = sweep_plan({"local": local, "ssh": NoSweep()}, store, home, clock.now())  # type: ignore[dict-item]
    assert [item.resource.job_id for item in report.orphans] == ["mine-1"]
    assert "not swept" in report.problems["ssh"]
    assert (home.work / "mine-1").is_dir(), "planning deletes nothing"
