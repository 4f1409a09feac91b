"""The GCP provider against the fake Compute API (gpujobs.testing.gcp): the real
google-cloud-compute clients, with a requests adapter answering in the API's JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpujobs.errors import (
    NoCapacityError,
    NotTerminatedError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.group import rendezvous_port
from gpujobs.providers.base import Offer, Provider, SupportsQuotaReport
from gpujobs.providers.catalog import parse_catalog
from gpujobs.providers.gcp import GcpProvider
from gpujobs.providers.gcp.models import label_value, resource_name
from gpujobs.spec import JobSpec, Resources
from gpujobs.testing import FakeClock
from gpujobs.testing.gcp import (
    FakeComputeApi,
    FakeHttpError,
    FakeOperationError,
    no_capacity_error,
    permission_denied,
    unavailable,
)

PROJECT = "test-project"
CALLER = "198.51.100.7"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJob gpujobs-job"
JOB = "mnist-a1b2c3"
CATALOG = parse_catalog(
    {
        "provider": "gcp",
        "as_of": "2026-01-01",
        "source": "test",
        "instance_types": [
            {
                "name": "n1-standard-4",
                "gpu": "T4",
                "gpus": 1,
                "cpus": 4,
                "memory_gb": 15,
                "prices": {"us-central1": [0.54, 0.18], "europe-west4": [0.6, 0.2]},
                "zones": {"us-central1": ["us-central1-a"], "europe-west4": ["europe-west4-b"]},
            },
            {
                "name": "g2-standard-8",
                "gpu": "L4",
                "gpus": 1,
                "cpus": 8,
                "memory_gb": 32,
                "prices": {"us-central1": [0.85, 0.3]},
                "zones": {"us-central1": ["us-central1-a"]},
            },
            {
                "name": "a2-highgpu-1g",
                "gpu": "A100",
                "gpus": 1,
                "cpus": 12,
                "memory_gb": 85,
                "prices": {"us-central1": [3.67, 1.2]},
                "zones": {"us-central1": ["us-central1-a"]},
            },
        ],
    }
)


@pytest.fixture
def api() -> FakeComputeApi:
    fake = FakeComputeApi(project=PROJECT)
    fake.set_quota("us-central1", "NVIDIA_T4_GPUS", 4, 0)
    fake.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", 8, 0)
    fake.set_quota("us-central1", "NVIDIA_L4_GPUS", 2, 0)
    fake.set_quota("us-central1", "NVIDIA_T4_VWS_GPUS", 4, 0)
    fake.set_quota("us-central1", "CPUS", 24, 4)
    fake.set_quota("europe-west4", "NVIDIA_T4_GPUS", 1, 0)
    fake.set_global_quota("GPUS_ALL_REGIONS", 8, 0)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def provider(api: FakeComputeApi, clock: FakeClock, **kwargs: object) -> GcpProvider:
    options: dict[str, object] = {
        "project": PROJECT,
        "catalog": CATALOG,
        "client_factory": api.client_factory,
        "caller_address": lambda: CALLER,
        "clock": clock,
        "call_timeout_s": 7.0,
    }
    options.update(kwargs)
    return GcpProvider(**options)  # type: ignore[arg-type]


def offer(
    instance_type: str = "n1-standard-4", *, spot: bool = False, zone: str = "us-central1-a"
) -> Offer:
    return next(
        o
        for o in CATALOG.offers
        if (o.instance_type, o.spot, o.zone) == (instance_type, spot, zone)
    )


def only_instance(api: FakeComputeApi) -> dict:
    (instance,) = api.instances.values()
    return instance


def metadata(instance: dict) -> dict[str, str]:
    return {item["key"]: item["value"] for item in instance["metadata"]["items"]}


# -- planning --------------------------------------------------------------------------------------
def test_offers_come_from_the_catalog_and_protocols_hold(api, clock) -> None:
    gcp = provider(api, clock)
    assert isinstance(gcp, Provider) and isinstance(gcp, SupportsQuotaReport)
    found = gcp.offers(Resources(gpu="t4"))
    assert {o.zone for o in found} == {"us-central1-a", "europe-west4-b"}
    assert {o.gpu for o in found} == {"T4"}
    assert api.requests == []  # planning does not call the API


def test_quota_is_the_regional_one_when_it_is_tighter(api, clock) -> None:
    api.set_quota("us-central1", "NVIDIA_T4_GPUS", 4, 3)
    quota = provider(api, clock).quota(offer())
    assert (quota.code, quota.region, quota.unit) == ("NVIDIA_T4_GPUS", "us-central1", "GPUs")
    assert (quota.limit, quota.in_use, quota.free, quota.per_node) == (4, 3, 1, 1)
    assert (
        quota.request_at == f"https://console.cloud.google.com/iam-admin/quotas?project={PROJECT}"
    )


def test_quota_is_the_global_one_when_it_is_tighter(api, clock) -> None:
    api.set_global_quota("GPUS_ALL_REGIONS", 1, 1)
    quota = provider(api, clock).quota(offer())
    assert (quota.code, quota.region, quota.free) == ("GPUS_ALL_REGIONS", "global", 0)


def test_spot_quota_is_the_preemptible_metric_or_else_the_regular_one(api, clock) -> None:
    gcp = provider(api, clock)
    assert gcp.quota(offer(spot=True)).code == "PREEMPTIBLE_NVIDIA_T4_GPUS"
    # No preemptible quota of its own: spot GPUs count against the regular one.
    assert provider(api, clock).quota(offer("g2-standard-8", spot=True)).code == "NVIDIA_L4_GPUS"


def test_quota_answers_are_cached_one_call_per_region(api, clock) -> None:
    gcp = provider(api, clock)
    gcp.quota(offer())
    gcp.quota(offer(spot=True))
    gcp.quota(offer("g2-standard-8"))
    gcp.quota(offer(zone="europe-west4-b"))
    assert [r.path for r in api.calls("regions.get")] == [
        f"projects/{PROJECT}/regions/us-central1",
        f"projects/{PROJECT}/regions/europe-west4",
    ]
    assert len(api.calls("projects.get")) == 1


def test_a_quota_gcp_does_not_report_is_unknown_not_unlimited(api, clock) -> None:
    api.project_quotas.clear()
    with pytest.raises(ProviderError, match="NVIDIA_A100_GPUS") as caught:
        provider(api, clock).quota(offer("a2-highgpu-1g"))
    assert not isinstance(caught.value, ProviderAuthError)


def test_quota_report_lists_every_region_and_the_global_quota(api, clock) -> None:
    report = provider(api, clock).quotas("T4")
    assert {(q.region, q.code) for q in report} == {
        ("us-central1", "NVIDIA_T4_GPUS"),
        ("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS"),
        ("europe-west4", "NVIDIA_T4_GPUS"),
        ("global", "GPUS_ALL_REGIONS"),
    }
    everything = provider(api, clock).quotas()
    codes = {q.code for q in everything}
    assert "NVIDIA_L4_GPUS" in codes and "NVIDIA_T4_VWS_GPUS" not in codes and "CPUS" not in codes
    assert len(api.calls("regions.list")) == 2  # one listing per report, not one per region


def test_quota_errors_are_translated(api, clock) -> None:
    api.deny(403)
    with pytest.raises(ProviderAuthError, match="permission denied"):
        provider(api, clock).quota(offer())
    api.clear_faults()
    api.fail_next("regions.get", FakeHttpError(400, "invalid", "Bad region", "INVALID_ARGUMENT"))
    with pytest.raises(ProviderError, match="Bad region") as caught:
        provider(api, clock).quota(offer())
    assert not isinstance(caught.value, ProviderAuthError)


# -- check: local credentials only -----------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "CLOUDSDK_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "user"
    monkeypatch.setenv("HOME", str(home))
    return home


def write_adc(home: Path, **fields: str) -> Path:
    path = home / ".config" / "gcloud" / "application_default_credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "authorized_user", "refresh_token": "secret", **fields}))
    return path


def test_check_without_adc_says_what_to_run(api, clock, clean_env) -> None:
    result = provider(api, clock, project=None).check()
    assert not result.ok
    assert "gcloud auth application-default login" in result.missing
    assert "GOOGLE_CLOUD_PROJECT" in result.missing
    assert api.requests == []


def test_check_with_adc_and_project(api, clock, clean_env, monkeypatch) -> None:
    path = write_adc(clean_env)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    result = provider(api, clock, project=None).check()
    assert result.ok and str(path) in result.found and "from-env" in result.found
    assert "secret" not in result.found + result.missing


def test_check_project_from_adc_file_then_gcloud_config(api, clock, clean_env) -> None:
    write_adc(clean_env, quota_project_id="from-adc")
    assert "project from-adc" in provider(api, clock, project=None).check().found
    write_adc(clean_env)
    config = clean_env / ".config" / "gcloud" / "configurations" / "config_default"
    config.parent.mkdir(parents=True)
    config.write_text("[core]\nproject = from-gcloud\naccount = me@example.com\n")
    assert "project from-gcloud" in provider(api, clock, project=None).check().found


def test_check_with_adc_but_no_project(api, clock, clean_env) -> None:
    write_adc(clean_env)
    result = provider(api, clock, project=None).check()
    assert not result.ok and "GOOGLE_CLOUD_PROJECT" in result.missing


def test_check_names_a_missing_credentials_file(api, clock, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(clean_env / "gone.json"))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    result = provider(api, clock, project=None).check()
    assert not result.ok and "gone.json" in result.missing and "does not exist" in result.missing


# -- provision -------------------------------------------------------------------------------------
def test_provision_n1_with_a_t4(api, clock) -> None:
    nodes = provider(api, clock, max_hours=2).provision(JOB, offer(), KEY, 1)
    (node,) = nodes
    assert (node.node_id, node.host, node.user) == (f"us-central1-a/gpujobs-{JOB}-0", "", "ubuntu")
    assert (node.instance_type, node.region, node.price_per_hour) == (
        "n1-standard-4",
        "us-central1",
        0.54,
    )
    instance = only_instance(api)
    assert instance["name"] == f"gpujobs-{JOB}-0"
    assert instance["labels"] == {"gpujobs-job": JOB}
    assert instance["disks"][0]["initializeParams"]["labels"] == {"gpujobs-job": JOB}
    assert instance["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-4"
    (accelerator,) = instance["guestAccelerators"]
    assert accelerator["acceleratorType"].endswith(
        "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4"
    )
    assert accelerator["acceleratorCount"] == 1
    scheduling = instance["scheduling"]
    assert scheduling["onHostMaintenance"] == "TERMINATE"
    assert scheduling["automaticRestart"] is False
    assert "provisioningModel" not in scheduling
    # GCP's own cap: the node's shutdown (2 h + 1 min) and a margin, then the VM is deleted.
    assert scheduling["maxRunDuration"] == {"seconds": str(121 * 60 + 600)}
    assert scheduling["instanceTerminationAction"] == "DELETE"
    items = metadata(instance)
    assert items["ssh-keys"] == f"ubuntu:{KEY}"
    assert 'SHUTDOWN_MINUTES="121"' in items["startup-script"]
    assert "shutdown -h" in items["startup-script"]
    assert items["gpujobs-job"] == JOB
    assert instance["tags"]["items"] == [f"gpujobs-{JOB}"]
    image = instance["disks"][0]["initializeParams"]["sourceImage"]
    assert image.endswith(
        "deeplearning-platform-release/global/images/common-cu128-ubuntu-2204-nvidia-570-v20260101"
    )
    family = (
        "deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570"
    )
    assert [r.path for r in api.calls("images.getFromFamily")] == [f"projects/{family}"]
    (rule,) = api.firewalls.values()
    assert rule["name"] == f"gpujobs-{JOB}-ssh"
    assert rule["sourceRanges"] == [f"{CALLER}/32"]
    assert rule["targetTags"] == instance["tags"]["items"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert rule["direction"] == "INGRESS" and JOB in rule["description"]


@pytest.mark.parametrize("instance_type", ["g2-standard-8", "a2-highgpu-1g"])
def test_machines_with_bundled_gpus_list_no_accelerators(api, clock, instance_type) -> None:
    provider(api, clock).provision(JOB, offer(instance_type), KEY, 1)
    instance = only_instance(api)
    assert "guestAccelerators" not in instance
    assert instance["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_spot_and_no_budget(api, clock) -> None:
    provider(api, clock).provision(JOB, offer(spot=True), KEY, 1)
    scheduling = only_instance(api)["scheduling"]
    assert scheduling["provisioningModel"] == "SPOT"
    assert scheduling["instanceTerminationAction"] == "DELETE"
    assert "maxRunDuration" not in scheduling
    assert 'SHUTDOWN_MINUTES=""' in metadata(only_instance(api))["startup-script"]


def test_for_spec_takes_max_hours_and_disk(api, clock) -> None:
    spec = JobSpec.model_validate(
        {
            "name": "t",
            "command": "python train.py",
            "resources": {"gpu": "T4", "disk_gb": 250.5},
            "providers": ["gcp"],
            "budget": {"max_hours": 0.5},
        }
    )
    configured = provider(api, clock).for_spec(spec)
    configured.provision(JOB, offer(), KEY, 1)
    instance = only_instance(api)
    assert instance["disks"][0]["initializeParams"]["diskSizeGb"] == "251"
    assert instance["scheduling"]["maxRunDuration"] == {"seconds": str(31 * 60 + 600)}


def test_a_boot_disk_is_never_smaller_than_the_image(api, clock) -> None:
    provider(api, clock, disk_gb=20).provision(JOB, offer(), KEY, 1)
    assert only_instance(api)["disks"][0]["initializeParams"]["diskSizeGb"] == "50"


def test_a_stopped_leftover_of_the_job_is_replaced(api, clock) -> None:
    gcp = provider(api, clock)
    gcp.provision(JOB, offer(), KEY, 1)
    only_instance(api)["status"] = "TERMINATED"  # e.g. its own shutdown timer fired
    gcp.provision(JOB, offer(), KEY, 1)
    assert only_instance(api)["status"] == "STAGING"
    assert len(api.calls("instances.delete")) == 1 and len(api.calls("instances.insert")) == 2


def test_provision_is_idempotent(api, clock) -> None:
    gcp = provider(api, clock)
    first = gcp.provision(JOB, offer(), KEY, 2)
    second = gcp.provision(JOB, offer(), KEY, 2)
    assert first == second
    # Two nodes: the SSH rule and the group's rule, each made once.
    assert len(api.calls("instances.insert")) == 2 and len(api.calls("firewalls.insert")) == 2
    assert len(api.instances) == 2 and len(api.firewalls) == 2


def test_a_moved_client_gets_the_rule_moved_to_its_new_address(api, clock) -> None:
    provider(api, clock).provision(JOB, offer(), KEY, 1)
    provider(api, clock, caller_address=lambda: "203.0.113.99").provision(JOB, offer(), KEY, 1)
    assert api.firewalls[f"gpujobs-{JOB}-ssh"]["sourceRanges"] == ["203.0.113.99/32"]
    assert len(api.calls("instances.insert")) == 1


def test_odd_job_ids_make_valid_names_and_labels(api, clock) -> None:
    job = "Odd.Job_" + "x" * 60
    gcp = provider(api, clock)
    gcp.provision(job, offer(), KEY, 1)
    instance = only_instance(api)
    assert instance["labels"]["gpujobs-job"] == label_value(job) != job
    assert label_value(job) == label_value(job) and len(label_value(job)) <= 63
    assert len(instance["name"]) <= 63 and instance["name"] == resource_name(job, "0")
    assert [node.job_id for node in gcp.owned()] == [job]  # the id comes back whole
    gcp.terminate(gcp.owned())
    assert api.instances == {} and api.firewalls == {}


# -- wait_ready ------------------------------------------------------------------------------------
def test_wait_ready_fills_host(api, clock) -> None:
    api.ready_after_polls = 3
    gcp = provider(api, clock)
    nodes = gcp.wait_ready(gcp.provision(JOB, offer(), KEY, 2))
    assert [n.host.startswith("203.0.113.") for n in nodes] == [True, True]
    node = nodes[0]
    assert (node.port, node.user, node.runtime, node.uses_job_key) == (22, "ubuntu", "docker", True)
    assert (
        node.workdir == f"/opt/gpujobs/work/{JOB}"
        and node.ready_file == "/opt/gpujobs/bootstrap.done"
    )
    assert clock.monotonic() > 0  # it polled on the injected clock


def test_wait_ready_reports_a_preempted_node_as_lost_capacity(api, clock) -> None:
    gcp = provider(api, clock)
    nodes = gcp.provision(JOB, offer(spot=True), KEY, 1)
    api.preempt("us-central1-a", f"gpujobs-{JOB}-0")
    with pytest.raises(NoCapacityError, match="gone"):
        gcp.wait_ready(nodes)


def test_losses_report_a_preempted_spot_vm_and_a_stopped_one(api, clock) -> None:
    gcp = provider(api, clock)
    spot = gcp.wait_ready(gcp.provision(JOB, offer(spot=True), KEY, 2))
    assert gcp.losses(spot) == []
    api.preempt("us-central1-a", f"gpujobs-{JOB}-1")
    [loss] = gcp.losses(spot)
    assert loss.node_id == spot[1].node_id and loss.preempted and "deleted" in loss.reason


def test_wait_ready_reports_a_stopped_node_as_lost_capacity(api, clock) -> None:
    gcp = provider(api, clock)
    nodes = gcp.provision(JOB, offer(), KEY, 1)
    gcp.wait_ready(nodes)
    only_instance(api)["status"] = "TERMINATED"
    with pytest.raises(NoCapacityError, match="TERMINATED"):
        gcp.wait_ready(nodes)


def test_wait_ready_has_a_deadline(api, clock) -> None:
    api.ready_after_polls = 10**6
    gcp = provider(api, clock, ready_timeout_s=60)
    nodes = gcp.provision(JOB, offer(), KEY, 1)
    with pytest.raises(ProvisioningError, match="after 60s"):
        gcp.wait_ready(nodes)


# -- a multi-node job's nodes ----------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 4])
def test_the_nodes_of_a_job_reach_each_other_on_the_rendezvous_ports_only(
    api, clock, count
) -> None:
    gcp = provider(api, clock)
    nodes = gcp.wait_ready(gcp.provision(JOB, offer(), KEY, count))
    assert [node.rank for node in nodes] == list(range(count))
    private = [node.private_host for node in nodes]
    assert all(address and address.startswith("10.128.0.") for address in private)
    assert len(set(private)) == count

    tag = f"gpujobs-{JOB}"
    ssh = api.firewalls[f"gpujobs-{JOB}-ssh"]
    assert ssh["sourceRanges"] == [f"{CALLER}/32"] and ssh["allowed"][0]["ports"] == ["22"]
    scripts = [instance["metadata"]["items"] for instance in api.instances.values()]
    band = [
        'PORT_BAND="30000 31999"' in item["value"]
        for items in scripts
        for item in items
        if item["key"] == "startup-script"
    ]
    if count == 1:  # one node: nothing opened between nodes, the kernel's range untouched
        assert set(api.firewalls) == {f"gpujobs-{JOB}-ssh"} and band == [False]
        return
    group = api.firewalls[f"gpujobs-{JOB}-group"]
    # From the job's own instances (their tag), to them, and no address range at all.
    assert group["sourceTags"] == [tag] and group["targetTags"] == [tag]
    assert "sourceRanges" not in group
    assert group["allowed"] == [
        {"IPProtocol": "tcp", "ports": [str(rendezvous_port(JOB)), "30000-31999"]}
    ]
    assert all(tag in instance["tags"]["items"] for instance in api.instances.values())
    assert band == [True] * count  # every node keeps NCCL/Gloo inside the band the rule opens

    gcp.terminate(nodes)
    assert api.instances == {} and api.firewalls == {}


def test_a_node_that_cannot_be_had_leaves_none_of_the_group(api, clock) -> None:
    """All or nothing: one of two nodes out of capacity, and the other one and both rules go."""
    api.fail_operations("instances.insert", no_capacity_error(PROJECT, "us-central1-a"), times=1)
    with pytest.raises(NoCapacityError):
        provider(api, clock).provision(JOB, offer(), KEY, 2)
    assert len(api.calls("instances.insert")) == 2  # one was made, then removed again
    assert api.instances == {} and api.firewalls == {}


def test_a_group_rule_left_by_a_crash_is_found_and_removed(api, clock) -> None:
    gcp = provider(api, clock)
    nodes = gcp.provision(JOB, offer(), KEY, 2)
    api.instances.clear()  # the instances went (their own timer); the rules stayed
    found = {r.resource_id for r in gcp.tagged() if r.kind == "firewall-rule"}
    assert found == {f"gpujobs-{JOB}-ssh", f"gpujobs-{JOB}-group"}
    gcp.terminate(nodes)
    assert api.firewalls == {}


# -- terminate and owned ---------------------------------------------------------------------------
def test_terminate_leaves_nothing_and_is_idempotent(api, clock) -> None:
    gcp = provider(api, clock)
    nodes = gcp.wait_ready(gcp.provision(JOB, offer(), KEY, 2))
    gcp.terminate(nodes)
    assert api.instances == {} and api.firewalls == {}
    gcp.terminate(nodes)  # already gone: fine
    provider(api, clock).terminate(nodes)


def test_the_rule_stays_while_a_node_of_the_job_remains(api, clock) -> None:
    gcp = provider(api, clock)
    first, second = gcp.provision(JOB, offer(), KEY, 2)
    gcp.terminate([first])
    assert len(api.instances) == 1 and len(api.firewalls) == 2  # SSH, and the group's
    gcp.terminate([second])
    assert api.instances == {} and api.firewalls == {}


def test_terminate_that_cannot_confirm_raises_not_terminated(api, clock) -> None:
    gcp = provider(api, clock, operation_timeout_s=30)
    nodes = gcp.provision(JOB, offer(), KEY, 1)
    api.operation_polls = 10**6
    with pytest.raises(NotTerminatedError, match=f"gpujobs down {JOB}"):
        gcp.terminate(nodes)


def test_owned_lists_tagged_instances_and_orphaned_rules(api, clock) -> None:
    gcp = provider(api, clock)
    gcp.wait_ready(gcp.provision(JOB, offer(), KEY, 1))
    gcp.provision("other-d4e5f6", offer(), KEY, 1)
    api.instances[("us-central1-a", "not-ours")] = {
        "name": "not-ours",
        "status": "RUNNING",
        "zone": "https://www.googleapis.com/compute/v1/projects/test-project/zones/us-central1-a",
    }
    gcp.terminate([n for n in gcp.owned() if n.job_id == "other-d4e5f6"])
    orphan = "orphan-777777"
    gcp.provision(orphan, offer(), KEY, 1)
    api.instances.pop(("us-central1-a", f"gpujobs-{orphan}-0"))  # the rule is left alone
    owned = {n.node_id: n for n in gcp.owned()}
    assert set(owned) == {f"us-central1-a/gpujobs-{JOB}-0", f"firewall/gpujobs-{orphan}-ssh"}
    node = owned[f"us-central1-a/gpujobs-{JOB}-0"]
    assert (node.job_id, node.region, node.price_per_hour) == (JOB, "us-central1", 0.54)
    assert node.host.startswith("203.0.113.")
    gcp.terminate(list(owned.values()))
    assert set(api.instances) == {("us-central1-a", "not-ours")} and api.firewalls == {}


# -- faults ----------------------------------------------------------------------------------------
def test_throttling_is_retried_then_succeeds(api, clock) -> None:
    api.throttle("instances.insert", times=2)
    api.fail_next("zoneOperations.get", unavailable(), times=2)
    provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert len(api.calls("instances.insert")) == 3
    assert len(api.instances) == 1 and clock.monotonic() > 0  # backed off on the fake clock


def test_throttling_that_never_stops_gives_up(api, clock) -> None:
    api.throttle("instances.insert", times=100)
    with pytest.raises(ProvisioningError, match="rateLimitExceeded"):
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert api.instances == {} and api.firewalls == {}


@pytest.mark.parametrize(
    "code", ["ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"]
)
def test_no_capacity_fails_over_and_cleans_up(api, clock, code) -> None:
    if code == "ZONE_RESOURCE_POOL_EXHAUSTED":
        api.no_capacity("us-central1-a")
    else:
        api.fail_operations(
            "instances.insert",
            FakeOperationError(code, "The zone 'projects/p/zones/us-central1-a' is out.", 503),
            zone="us-central1-a",
        )
    with pytest.raises(NoCapacityError, match=code) as caught:
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert "us-central1-a" in str(caught.value)
    assert api.instances == {} and api.firewalls == {}  # the rule made first is gone again
    assert provider(api, clock).provision(JOB, offer(zone="europe-west4-b"), KEY, 1)


def test_capacity_is_recognised_by_the_words_too(api, clock) -> None:
    words = "The zone 'projects/p/zones/us-central1-a' does not have enough resources available."
    api.fail_operations("instances.insert", FakeOperationError("STOCKOUT", words, 503))
    with pytest.raises(NoCapacityError, match="STOCKOUT"):
        provider(api, clock).provision(JOB, offer(), KEY, 1)


def test_quota_exceeded_names_the_metric_and_where_to_ask(api, clock) -> None:
    api.exceed_quota("NVIDIA_T4_GPUS", "us-central1")
    with pytest.raises(QuotaExceededError) as caught:
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    text = str(caught.value)
    assert "NVIDIA_T4_GPUS" in text and "us-central1" in text
    assert f"iam-admin/quotas?project={PROJECT}" in text
    assert api.instances == {} and api.firewalls == {}


def test_a_quota_refusal_in_the_answer_is_quota_not_auth(api, clock) -> None:
    refusal = FakeHttpError(
        403,
        "quotaExceeded",
        "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.",
        "PERMISSION_DENIED",
        "usageLimits",
    )
    api.fail_next("instances.insert", refusal)
    with pytest.raises(QuotaExceededError, match="GPUS_ALL_REGIONS"):
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert api.firewalls == {}


@pytest.mark.parametrize("code", [401, 403])
def test_refused_credentials_stop_at_once(api, clock, code) -> None:
    api.deny(code)
    with pytest.raises(
        ProviderAuthError, match=r"gcloud auth application-default login|permission"
    ):
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert api.instances == {} and api.firewalls == {}
    assert len(api.calls("images.getFromFamily")) <= 3  # not retried like throttling (401: refresh)


def test_revoked_credentials_say_how_to_log_in_again(api, clock) -> None:
    api.revoke_credentials()
    with pytest.raises(ProviderAuthError, match="gcloud auth application-default login"):
        provider(api, clock).owned()


def test_a_hung_call_times_out_and_is_retried(api, clock) -> None:
    api.hang("instances.get", times=1)
    provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert len(api.instances) == 1
    assert {request.timeout for request in api.requests} == {7.0}  # every call had a timeout


def test_a_call_that_always_hangs_fails_and_leaks_nothing(api, clock) -> None:
    api.hang("instances.insert", times=None)
    with pytest.raises(ProvisioningError, match="no answer in time"):
        provider(api, clock).provision(JOB, offer(), KEY, 1)
    assert api.instances == {} and api.firewalls == {}


def test_a_failure_after_some_nodes_removes_them(api, clock) -> None:
    api.fail_operations(
        "instances.insert",
        FakeOperationError("RESOURCE_OPERATION_RATE_EXCEEDED", "Operation rate exceeded."),
        times=1,
        zone="us-central1-a",
    )
    with pytest.raises(ProvisioningError, match="RESOURCE_OPERATION_RATE_EXCEEDED"):
        provider(api, clock).provision(JOB, offer(), KEY, 3)
    assert api.instances == {} and api.firewalls == {}


def test_a_failed_cleanup_is_reported_with_the_cause(api, clock) -> None:
    api.no_capacity("us-central1-a")
    api.fail_next("firewalls.delete", permission_denied("compute.firewalls.delete"), times=None)
    with pytest.raises(NoCapacityError, match=f"cleaning up failed too.*gpujobs down {JOB}"):
        provider(api, clock).provision(JOB, offer(), KEY, 1)


def test_operations_have_a_deadline(api, clock) -> None:
    api.operation_polls = 10**6
    with pytest.raises(ProvisioningError, match="not done after 20s"):
        provider(api, clock, operation_timeout_s=20).provision(JOB, offer(), KEY, 1)


# -- imports ---------------------------------------------------------------------------------------
def test_importing_the_provider_does_not_import_google() -> None:
    code = (
        "import sys, gpujobs, gpujobs.providers.gcp\n"
        "loaded = [m for m in sys.modules if m.startswith(('google', 'requests'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
