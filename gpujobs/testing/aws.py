"""AWS at its API boundary, for tests: moto serves EC2; this module adds what moto lacks.

- AwsFakes: handlers on a boto3 session's `before-call` events (the hook botocore's own Stubber
  uses), installed before any client exists. They answer Service Quotas' EC2 quotas (which moto
  does not model) and inject faults into any operation: throttling, no capacity, quota exceeded,
  refused credentials, a call that hangs until its read timeout, or any other AWS error code.
  Calls that match no rule fall through to moto.
- MOTO_AMIS: a moto AMI file holding AWS's Deep Learning Base GPU AMIs (set MOTO_AMIS_PATH to it
  before moto is imported), so the provider's image lookup runs against the real filter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

THROTTLED = ("RequestLimitExceeded", "Request limit exceeded.")
NO_CAPACITY = (
    "InsufficientInstanceCapacity",
    "We currently do not have sufficient capacity in the Availability Zone you requested.",
)
VCPU_LIMIT = (
    "VcpuLimitExceeded",
    "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the "
    "instance bucket that the specified instance type belongs to.",
)
AUTH_FAILURE = ("AuthFailure", "AWS was not able to validate the provided access credentials")


@dataclass
class Fault:
    operation: str  # botocore's name, e.g. "RunInstances"
    code: str = ""
    message: str = ""
    times: int = 1  # how many calls fail before the operation works again; -1: always
    after: int = 0  # how many matching calls succeed before the first failure
    region: str | None = None
    hang: bool = False  # raise the read timeout a hung call ends in
    status: int = 400
    raise_instead: BaseException | None = None  # e.g. NoCredentialsError()


@dataclass
class AwsFakes:
    applied_quotas: dict[tuple[str, str], float] = field(default_factory=dict)
    default_quota: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (service, op, region)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, region: str = "us-east-1") -> boto3.Session:
        import boto3

        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        session.events.register("before-call", self._before_call)
        return session

    def fail(self, operation: str, error: tuple[str, str], **options: Any) -> Fault:
        code, message = error
        fault = Fault(operation, code, message, **options)
        self.faults.append(fault)
        return fault

    def called(self, operation: str, region: str | None = None) -> int:
        return sum(1 for _, op, where in self.calls if op == operation and region in (None, where))

    def _before_call(
        self, model: Any, params: Any, request_signer: Any, **_: Any
    ) -> tuple[Any, dict[str, Any]] | None:
        from botocore.exceptions import ReadTimeoutError

        operation, service = model.name, model.service_model.service_name
        region = request_signer.region_name
        with self._lock:
            self.calls.append((service, operation, region))
            fault = self._take_fault(operation, region)
        if fault is not None:
            if fault.raise_instead is not None:
                raise fault.raise_instead
            if fault.hang:
                raise ReadTimeoutError(endpoint_url=params.get("url", service))
            return _answer(fault.status, {"Error": {"Code": fault.code, "Message": fault.message}})
        if service == "service-quotas":
            return self._quota_answer(operation, region, params.get("body", {}))
        return None  # moto answers

    def _take_fault(self, operation: str, region: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation != operation or fault.region not in (None, region):
                continue
            if fault.times == 0:
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            if fault.times > 0:
                fault.times -= 1
            return fault
        return None

    def _quota_answer(self, operation: str, region: str, body: Any) -> tuple[Any, dict[str, Any]]:
        import json

        request = json.loads(body) if isinstance(body, (bytes, str)) and body else {}
        code = request.get("QuotaCode", "")
        quota = {"ServiceCode": "ec2", "QuotaCode": code, "Unit": "None", "Adjustable": True}
        if operation == "GetServiceQuota":
            if (region, code) not in self.applied_quotas:
                return _answer(
                    400,
                    {
                        "Error": {
                            "Code": "NoSuchResourceException",
                            "Message": "The request failed because the specified quota "
                            "does not exist or has no applied value.",
                        }
                    },
                )
            return _answer(200, {"Quota": {**quota, "Value": self.applied_quotas[region, code]}})
        if operation == "GetAWSDefaultServiceQuota":
            return _answer(200, {"Quota": {**quota, "Value": self.default_quota}})
        return _answer(400, {"Error": {"Code": "NoSuchResourceException", "Message": operation}})


def _answer(status: int, parsed: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse

    parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": status})
    return AWSResponse("https://fake.amazonaws.com", status, {}, None), parsed


def tagged_leftovers(session: boto3.Session, regions: list[str], tag: str) -> list[str]:
    """Every instance (not terminated), key pair and security group carrying `tag`, across
    `regions`: what a test asserts is empty after teardown."""
    left: list[str] = []
    for region in regions:
        ec2 = session.client("ec2", region_name=region)
        tag_filter = [{"Name": "tag-key", "Values": [tag]}]
        for reservation in ec2.describe_instances(Filters=tag_filter)["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] != "terminated":
                    left.append(f"instance {instance['InstanceId']} in {region}")
        for pair in ec2.describe_key_pairs(Filters=tag_filter)["KeyPairs"]:
            left.append(f"key pair {pair['KeyName']} in {region}")
        for group in ec2.describe_security_groups(Filters=tag_filter)["SecurityGroups"]:
            left.append(f"security group {group['GroupName']} in {region}")
    return left


def reclaim_spot_instance(region: str, instance_id: str) -> None:
    """What AWS does to a spot instance it takes back, which moto (having no spot market) never
    does: the instance is terminated with the state reason Server.SpotInstanceTermination."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    instance = ec2_backends[DEFAULT_ACCOUNT_ID][region].get_instance(instance_id)
    instance.terminate()
    instance.state_reason = StateReason(
        "Server.SpotInstanceTermination: Spot instance termination",
        "Server.SpotInstanceTermination",
    )
