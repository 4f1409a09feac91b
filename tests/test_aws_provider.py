"""The AWS provider against moto (EC2) and AwsFakes (Service Quotas, injected faults)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator

import pytest
from moto import mock_aws

from gpujobs.errors import (
    NoCapacityError,
    ProviderAuthError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.group import COLLECTIVE_PORTS, rendezvous_port
from gpujobs.providers.aws import AwsProvider
from gpujobs.providers.base import TAG_KEY
from gpujobs.providers.catalog import Catalog, parse_catalog
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.spec import Resources
from gpujobs.testing import FakeClock
from gpujobs.testing.aws import (
    AUTH_FAILURE,
    NO_CAPACITY,
    THROTTLED,
    VCPU_LIMIT,
    AwsFakes,
    reclaim_spot_instance,
    tagged_leftovers,
)

CALLER = "203.0.113.7"
REGIONS = ["us-east-1", "us-west-2"]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ3cJ1ACMbUrsVtq3T1X1WhzqoFYr8MfFSeulmyX8Nm job"


def small_catalog() -> Catalog:
    prices = {region: [0.526, 0.21] for region in REGIONS}
    return parse_catalog(
        {
            "provider": "aws",
            "as_of": "2026-11-01",
            "source": "test",
            "instance_types": [
                {"name": "g4dn.xlarge", "gpu": "T4", "gpus": 1, "cpus": 4, "memory_gb": 16,
                 "prices": prices},
                {"name": "p3.2xlarge", "gpu": "V100", "gpus": 1, "cpus": 8, "memory_gb": 61,
                 "prices": {"us-east-1": [3.06, 0.92]}},
            ],
        }
    )  # fmt: skip


@pytest.fixture
def fakes() -> Iterator[AwsFakes]:
    with mock_aws():
        yield AwsFakes(applied_quotas={(r, "L-DB2E81BA"): 8 for r in REGIONS})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def aws(fakes: AwsFakes, clock: FakeClock) -> AwsProvider:
    return AwsProvider(
        catalog=small_catalog(),
        session_factory=fakes.session,
        caller_address=lambda: CALLER,
        clock=clock,
        settings=CloudNodeSettings(ssh_user="ubuntu", root="/opt/gpujobs"),
        max_hours=2,
    )


def offer(aws: AwsProvider, instance_type: str = "g4dn.xlarge", region: str = "us-east-1",
          spot: bool = False):  # fmt: skip
    [found] = [
        o
        for o in aws.offers(Resources())
        if (o.instance_type, o.region, o.spot) == (instance_type, region, spot)
    ]
    return found


def ec2(fakes: AwsFakes, region: str = "us-east-1"):
    return fakes.session().client("ec2", region_name=region)


def test_provision_tags_everything_locks_ssh_to_the_caller_and_requires_imdsv2(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    [node] = aws.provision("mnist-abc123", offer(aws), KEY, 1)
    client = ec2(fakes)
    [instance] = client.describe_instances(InstanceIds=[node.node_id])["Reservations"][0][
        "Instances"
    ]
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert tags[TAG_KEY] == "mnist-abc123"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["ImageId"] == "ami-0dl0000000000new", "the newest GPU image, by lookup"
    assert instance["KeyName"] == "gpujobs-mnist-abc123"
    shutdown = client.describe_instance_attribute(
        InstanceId=node.node_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = client.describe_instance_attribute(InstanceId=node.node_id, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert 'SHUTDOWN_MINUTES="121"' in script, "the node ends itself at max_hours"
    [group] = client.describe_security_groups(GroupNames=["gpujobs-mnist-abc123"])["SecurityGroups"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]}[TAG_KEY] == "mnist-abc123"
    [rule] = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == [f"{CALLER}/32"]
    [pair] = client.describe_key_pairs(KeyNames=["gpujobs-mnist-abc123"])["KeyPairs"]
    assert {t["Key"]: t["Value"] for t in pair["Tags"]}[TAG_KEY] == "mnist-abc123"
    assert node.uses_job_key and node.runtime == "docker"
    assert node.ready_file == "/opt/gpujobs/bootstrap.done"


def test_spot_goes_through_instance_market_options(aws: AwsProvider, fakes: AwsFakes) -> None:
    [node] = aws.provision("spot-1", offer(aws, spot=True), KEY, 1)
    [instance] = ec2(fakes).describe_instances(InstanceIds=[node.node_id])["Reservations"][0][
        "Instances"
    ]
    assert instance["InstanceLifecycle"] == "spot"
    assert node.spot and node.price_per_hour == 0.21


def test_provision_is_idempotent_and_wait_ready_gives_the_public_address(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    first = aws.provision("again-1", offer(aws), KEY, 1)
    second = aws.provision("again-1", offer(aws), KEY, 1)
    assert [n.node_id for n in first] == [n.node_id for n in second]
    assert fakes.called("RunInstances") == 1
    [ready] = aws.wait_ready(second)
    assert ready.host and ready.user == "ubuntu" and ready.port == 22
    assert ready.workdir == "/opt/gpujobs/work/again-1"


def test_losses_tell_a_reclaimed_spot_instance_from_a_running_one(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    first = aws.wait_ready(aws.provision("spot-2", offer(aws, spot=True), KEY, 1))
    assert aws.losses(first) == []
    reclaim_spot_instance("us-east-1", first[0].node_id)
    [loss] = aws.losses(first)
    assert loss.node_id == first[0].node_id and loss.preempted
    assert "terminated" in loss.reason and "Server.SpotInstanceTermination" in loss.reason
    # A restart makes a new instance: a new idempotency token, not the terminated one's.
    again = aws.provision("spot-2", offer(aws, spot=True), KEY, 1, restart=1)
    assert again[0].node_id != first[0].node_id and aws.losses(again) == []


@pytest.mark.parametrize("count", [1, 2, 4])
def test_a_group_of_nodes_meets_on_its_rendezvous_ports_and_nothing_else(
    aws: AwsProvider, fakes: AwsFakes, count: int
) -> None:
    job = f"group-{count}"
    nodes = aws.wait_ready(aws.provision(job, offer(aws), KEY, count))
    assert sorted(node.rank for node in nodes) == list(range(count))
    assert all(node.private_host and node.private_host != node.host for node in nodes)
    [group] = ec2(fakes).describe_security_groups(GroupNames=[f"gpujobs-{job}"])["SecurityGroups"]
    ssh = [r for r in group["IpPermissions"] if r["FromPort"] == 22]
    assert [r["IpRanges"][0]["CidrIp"] for r in ssh] == [f"{CALLER}/32"]
    members = [r for r in group["IpPermissions"] if r["FromPort"] != 22]
    user_data = [
        base64.b64decode(
            ec2(fakes).describe_instance_attribute(InstanceId=node.node_id, Attribute="userData")[
                "UserData"
            ]["Value"]
        ).decode()
        for node in nodes
    ]
    low, high = COLLECTIVE_PORTS
    if count == 1:  # one node: nothing opened between nodes, the kernel's range untouched
        assert members == [] and all('PORT_BAND=""' in text for text in user_data)
        return
    port = rendezvous_port(job)
    # The rendezvous port and the band NCCL/Gloo listen in, from the group itself only.
    assert sorted((r["FromPort"], r["ToPort"]) for r in members) == [(port, port), (low, high)]
    for rule in members:
        assert rule["IpRanges"] == [] and rule["IpProtocol"] == "tcp"
        assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == [group["GroupId"]]
    assert all(f'PORT_BAND="{low} {high}"' in text for text in user_data)


def test_terminate_leaves_nothing_tagged_and_is_idempotent(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    nodes = aws.wait_ready(aws.provision("gone-1", offer(aws), KEY, 2))
    assert len({n.node_id for n in nodes}) == 2
    assert len(aws.owned()) == 2
    aws.terminate(nodes)
    assert tagged_leftovers(fakes.session(), REGIONS, TAG_KEY) == []
    aws.terminate(nodes)  # again: nothing left to do, no error
    assert aws.owned() == []


def test_quota_is_in_vcpus_with_the_code_and_where_to_ask(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    quota = aws.quota(offer(aws))
    assert (quota.code, quota.unit, quota.limit, quota.per_node) == ("L-DB2E81BA", "vCPUs", 8, 4)
    assert quota.request_at.endswith("/servicequotas/home/services/ec2/quotas/L-DB2E81BA")
    spot = aws.quota(offer(aws, spot=True))
    assert (spot.code, spot.limit) == ("L-3819A6DF", 0), "never raised: AWS's default applies"
    p_class = aws.quota(offer(aws, "p3.2xlarge"))
    assert p_class.code == "L-417A185B"
    aws.wait_ready(aws.provision("uses-1", offer(aws), KEY, 1))
    fresh = AwsProvider(catalog=small_catalog(), session_factory=fakes.session,
                        caller_address=lambda: CALLER)  # fmt: skip
    assert fresh.quota(offer(fresh)).in_use == 4, "the running g4dn.xlarge counts"
    before = fakes.called("GetServiceQuota")
    aws.quota(offer(aws))
    assert fakes.called("GetServiceQuota") == before, "asked once per region and code"


def test_quota_report_covers_every_region_and_code(aws: AwsProvider) -> None:
    report = aws.quotas()
    assert {(q.region, q.code) for q in report} == {
        (region, code)
        for region in REGIONS
        for code in ("L-DB2E81BA", "L-417A185B", "L-3819A6DF", "L-7212CCBC")
    }


def test_throttling_is_retried_with_backoff(
    aws: AwsProvider, fakes: AwsFakes, clock: FakeClock
) -> None:
    fakes.fail("RunInstances", THROTTLED, times=3)
    [node] = aws.provision("throttled-1", offer(aws), KEY, 1)
    assert node.node_id.startswith("i-")
    assert fakes.called("RunInstances") == 4
    assert clock.monotonic() > 0, "it waited between tries, on the injected clock"


def test_no_capacity_is_a_capacity_error_and_cleans_up_what_it_made(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    fakes.fail("RunInstances", NO_CAPACITY, times=-1)
    with pytest.raises(NoCapacityError, match="InsufficientInstanceCapacity"):
        aws.provision("full-1", offer(aws), KEY, 1)
    assert tagged_leftovers(fakes.session(), REGIONS, TAG_KEY) == []


def test_quota_exceeded_says_what_to_request(aws: AwsProvider, fakes: AwsFakes) -> None:
    fakes.fail("RunInstances", VCPU_LIMIT, times=-1)
    with pytest.raises(QuotaExceededError, match=r"servicequotas.*L-DB2E81BA"):
        aws.provision("quota-1", offer(aws), KEY, 1)
    assert tagged_leftovers(fakes.session(), REGIONS, TAG_KEY) == []


def test_refused_credentials_stop_with_the_credential_named(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    fakes.fail("ImportKeyPair", AUTH_FAILURE, times=-1)
    with pytest.raises(ProviderAuthError, match=r"AuthFailure.*aws configure"):
        aws.provision("auth-1", offer(aws), KEY, 1)


def test_a_failure_after_the_first_node_removes_every_node_made(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    fakes.fail("RunInstances", ("InvalidParameterValue", "boom on rank 1"), after=1)
    with pytest.raises(ProvisioningError, match="boom on rank 1"):
        aws.provision("half-1", offer(aws), KEY, 2)
    assert tagged_leftovers(fakes.session(), REGIONS, TAG_KEY) == []


def test_a_call_that_hangs_ends_in_a_clear_error(aws: AwsProvider, fakes: AwsFakes) -> None:
    fakes.fail("DescribeVpcs", ("", ""), hang=True, times=-1)
    with pytest.raises(Exception, match="aws did not answer"):
        aws.provision("hang-1", offer(aws), KEY, 1)


def test_check_names_the_missing_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    found = AwsProvider(catalog=small_catalog()).check()
    assert not found.ok and "aws configure" in found.missing
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    found = AwsProvider(catalog=small_catalog()).check()
    assert found.ok and found.found.startswith("env")
    assert "do-not-print-me" not in found.model_dump_json()


def test_importing_the_provider_does_not_import_boto3() -> None:
    code = "import sys, gpujobs.providers.aws; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_reprovision_from_a_new_address_closes_ssh_to_the_old_one(
    aws: AwsProvider, fakes: AwsFakes
) -> None:
    """The laptop moved (café to home) between a spot loss and the restart: the job's group
    admits the new /32 only, never both."""
    aws.provision("moved-1", offer(aws, spot=True), KEY, 1)
    aws.caller_address = lambda: "198.51.100.23"
    aws.provision("moved-1", offer(aws, spot=True), KEY, 1, restart=1)
    [group] = ec2(fakes).describe_security_groups(GroupNames=["gpujobs-moved-1"])["SecurityGroups"]
    ssh = [r for r in group["IpPermissions"] if r["FromPort"] == 22]
    assert [ip["CidrIp"] for rule in ssh for ip in rule["IpRanges"]] == ["198.51.100.23/32"]
