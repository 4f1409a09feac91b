"""The AWS provider: EC2 GPU instances through boto3's standard credential chain and profiles.

Everything a job creates carries the tag `gpujobs-job=<id>`: one key pair (the job's public key),
one security group admitting TCP 22 from the caller's /32 only, and its instances (IMDSv2
required; an instance-initiated shutdown terminates, so the budget timer in the bootstrap ends the
bill even when the client is gone). Spot goes through instance market options. The image is the
newest AWS Deep Learning Base GPU AMI, found by lookup.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import NoCapacityError, NotTerminatedError, ProviderError, ProvisioningError
from gpujobs.group import COLLECTIVE_PORTS, member_ports
from gpujobs.providers.aws.client import CREDENTIALS_HELP, AwsClients
from gpujobs.providers.aws.quota import AwsQuotas, instance_class, quota_code, request_url
from gpujobs.providers.base import (
    TAG_KEY,
    Credentials,
    Node,
    NodeLoss,
    Offer,
    Quota,
    TaggedResource,
)
from gpujobs.providers.cloud import (
    Bootstrap,
    CallerAddress,
    CloudNodeSettings,
    caller_cidr,
    lookup_caller_address,
)
from gpujobs.spec import JobSpec, Resources

if TYPE_CHECKING:
    from datetime import datetime

    import boto3

    from gpujobs.providers.catalog import Catalog

T = TypeVar("T")

RANK_TAG = "gpujobs-rank"
IMAGE_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
_GONE_STATES = frozenset({"terminated", "shutting-down"})
_SWEEP_ORDER = {"instance": 0, "security-group": 1, "key-pair": 2}


def default_session() -> boto3.Session:
    import boto3

    return boto3.Session()  # AWS_PROFILE, env keys, ~/.aws, SSO: boto3's own chain


@dataclasses.dataclass(frozen=True)
class AwsTimings:
    wait_ready_s: float = 600.0
    terminate_s: float = 600.0
    poll_s: float = 5.0


class AwsProvider:
    name = "aws"

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        session_factory: Callable[[], boto3.Session] = default_session,
        caller_address: CallerAddress = lookup_caller_address,
        clock: Clock | None = None,
        settings: CloudNodeSettings | None = None,
        timings: AwsTimings | None = None,
        max_hours: float | None = None,
        disk_gb: float = 100.0,
    ) -> None:
        self._catalog = catalog
        self.session_factory = session_factory
        self.caller_address = caller_address
        self.clock = clock or SystemClock()
        self.settings = settings or CloudNodeSettings()
        self.timings = timings or AwsTimings()
        self.max_hours = max_hours
        self.disk_gb = disk_gb
        self.clients = AwsClients(session_factory, self.clock)
        self.quotas_cache = AwsQuotas(self.clients, self._vcpus)
        self._images: dict[str, tuple[str, str]] = {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from gpujobs.providers.catalog import load_catalog

            self._catalog = load_catalog("aws")
        return self._catalog

    def _vcpus(self, instance_type: str) -> int | None:
        for offer in self.catalog.offers:
            if offer.instance_type == instance_type:
                return offer.cpus
        return None

    def for_spec(self, spec: JobSpec) -> AwsProvider:
        # A shallow copy: one boto3 session, one set of clients and one quota cache per process.
        configured = copy.copy(self)
        configured.max_hours = spec.budget.max_hours
        configured.disk_gb = spec.resources.disk_gb or 100.0
        return configured

    # -- what can be had ----------------------------------------------------------------------
    def check(self) -> Credentials:
        """The credential boto3's chain finds, without calling AWS."""
        try:
            session = self.clients.session
            credentials = session.get_credentials()
        except Exception as exc:  # a broken profile or config file
            return Credentials(provider=self.name, ok=False, missing=f"{exc}; {CREDENTIALS_HELP}")
        if credentials is None:
            return Credentials(provider=self.name, ok=False, missing=CREDENTIALS_HELP)
        profile = session.profile_name or os.environ.get("AWS_PROFILE") or "default"
        method = getattr(credentials, "method", "") or "credentials"
        return Credentials(provider=self.name, ok=True, found=f"{method} (profile {profile})")

    def offers(self, resources: Resources) -> list[Offer]:
        return self.catalog.matching(resources)

    def quota(self, offer: Offer) -> Quota:
        return self.quotas_cache.quota(offer.region, offer.instance_type, offer.spot, offer.cpus)

    def quotas(self, gpu: str | None = None) -> list[Quota]:
        """Every region's GPU quotas; with `gpu`, only the classes and regions that offer it."""
        offers = [o for o in self.catalog.offers if gpu is None or o.gpu == gpu.upper()]
        classes = frozenset(filter(None, (instance_class(o.instance_type) for o in offers)))
        regions = sorted({o.region for o in offers})
        with ThreadPoolExecutor(max_workers=8) as pool:
            per_region = list(pool.map(lambda r: self.quotas_cache.report(r, classes), regions))
        return [quota for region in per_region for quota in region]

    # -- provisioning -------------------------------------------------------------------------
    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        region = offer.region
        created_here: list[str] = []
        try:
            key_name = self._key_pair(region, job_id, ssh_public_key)
            group_id = self._security_group(region, job_id)
            if nodes > 1:
                self._let_members_meet(region, job_id, group_id)
            band = COLLECTIVE_PORTS if nodes > 1 else None
            made = [
                self._instance(
                    region, job_id, rank, offer, key_name, group_id, created_here, restart, band
                )
                for rank in range(nodes)
            ]
        except ProviderError:
            self._clean_up(region, job_id, created_here)
            raise
        return [self._node(job_id, offer, instance) for instance in made]

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        deadline = self.clock.monotonic() + self.timings.wait_ready_s
        while True:
            ready, waiting = [], []
            for node in nodes:
                instance = self._describe(node.region, node.node_id)
                state = instance["State"]["Name"] if instance else "terminated"
                if state in _GONE_STATES or state in ("stopping", "stopped"):
                    reason = (instance or {}).get("StateReason", {}).get("Message", state)
                    raise NoCapacityError(
                        f"aws {node.instance_type} in {node.region} ended while starting: {reason}"
                    )
                address = (instance or {}).get("PublicIpAddress")
                if state == "running" and address:
                    private = (instance or {}).get("PrivateIpAddress")
                    ready.append(node.model_copy(update={"host": address, "private_host": private}))
                else:
                    waiting.append(node.node_id)
            if not waiting:
                return ready
            if self.clock.monotonic() >= deadline:
                raise ProvisioningError(
                    f"aws instances {', '.join(waiting)} were not running with a public address "
                    f"after {self.timings.wait_ready_s:g} s"
                )
            self.clock.sleep(self.timings.poll_s)

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        """Nodes AWS stopped or terminated: a reclaimed spot instance says so in its state
        reason (Server.SpotInstanceTermination, or ...Shutdown for a stopping one)."""
        found = []
        for node in nodes:
            instance = self._describe(node.region, node.node_id)
            state = instance["State"]["Name"] if instance else "terminated"
            if state in ("pending", "running"):
                continue
            reason = (instance or {}).get("StateReason", {})
            code = reason.get("Code", "")
            words = reason.get("Message") or code or f"the instance is {state}"
            found.append(
                NodeLoss(
                    node_id=node.node_id,
                    reason=f"aws {node.node_id} in {node.region} is {state}: {words}",
                    preempted=code.startswith("Server.SpotInstance"),
                )
            )
        return found

    def terminate(self, nodes: list[Node]) -> None:
        by_region: dict[tuple[str, str], list[str]] = {}
        for node in nodes:
            by_region.setdefault((node.region, node.job_id), []).append(node.node_id)
        for (region, job_id), ids in by_region.items():
            self._clean_up(region, job_id, ids)

    def owned(self) -> list[Node]:
        return [node for region in self._per_region(self._owned_in) for node in region]

    def tagged(self) -> list[TaggedResource]:
        """Instances (not terminated), security groups and key pairs carrying the job tag, in
        every catalog region; instances first, as their security groups wait for them."""
        found = [item for region in self._per_region(self._tagged_in) for item in region]
        return sorted(found, key=lambda item: _SWEEP_ORDER[item.kind])  # stable: regions kept

    def delete(self, resource: TaggedResource) -> None:
        region, resource_id = resource.region, resource.resource_id
        if resource.kind == "instance":
            self._terminate_and_wait(region, [resource_id])
        elif resource.kind == "security-group":
            users = self._instances_using(region, resource_id)
            if users:
                raise NotTerminatedError(
                    f"aws security group {resource_id} in {region} is still used by instance(s) "
                    f"{', '.join(users)}; terminate them first"
                )
            self._delete_group(region, resource_id, resource_id)
        elif resource.kind == "key-pair":
            self._delete_key_pair(region, resource_id)
        else:
            raise ProviderError(f"aws: gpujobs does not delete {resource.kind}s ({resource_id})")

    # -- the pieces ---------------------------------------------------------------------------
    def _tags(self, job_id: str, resource: str, **extra: str) -> list[dict[str, Any]]:
        tags = [{"Key": TAG_KEY, "Value": job_id}, {"Key": "Name", "Value": f"gpujobs-{job_id}"}]
        tags += [{"Key": key, "Value": value} for key, value in extra.items()]
        return [{"ResourceType": resource, "Tags": tags}]

    def _key_pair(self, region: str, job_id: str, public_key: str | None) -> str | None:
        if public_key is None:
            return None
        name = f"gpujobs-{job_id}"
        try:
            self.clients.call(
                "ec2",
                region,
                "import_key_pair",
                f"importing the job's key pair in {region}",
                KeyName=name,
                PublicKeyMaterial=public_key.encode(),
                TagSpecifications=self._tags(job_id, "key-pair"),
            )
        except ProviderError as exc:
            if exc.code != "InvalidKeyPair.Duplicate":  # made by an earlier try: reuse
                raise
        return name

    def _default_vpc(self, region: str) -> str:
        vpcs = self.clients.call(
            "ec2",
            region,
            "describe_vpcs",
            f"finding the default VPC in {region}",
            Filters=[{"Name": "isDefault", "Values": ["true"]}],
        )["Vpcs"]
        if not vpcs:
            raise ProvisioningError(
                f"aws region {region} has no default VPC: create one with "
                f"`aws ec2 create-default-vpc --region {region}`, or leave the region out"
            )
        return str(vpcs[0]["VpcId"])

    def _job_security_groups(self, region: str, name: str) -> list[dict[str, Any]]:
        return list(
            self.clients.call(
                "ec2",
                region,
                "describe_security_groups",
                f"finding security group {name}",
                Filters=[{"Name": "group-name", "Values": [name]}],
            )["SecurityGroups"]
        )

    def _security_group(self, region: str, job_id: str) -> str:
        name = f"gpujobs-{job_id}"
        existing = self._job_security_groups(region, name)
        if existing:
            group_id = str(existing[0]["GroupId"])
        else:
            group_id = str(
                self.clients.call(
                    "ec2",
                    region,
                    "create_security_group",
                    f"creating security group {name}",
                    GroupName=name,
                    VpcId=self._default_vpc(region),
                    Description=f"gpujobs job {job_id}: SSH from the launching machine only",
                    TagSpecifications=self._tags(job_id, "security-group"),
                )["GroupId"]
            )
        cidr = caller_cidr(self.caller_address)
        try:
            self.clients.call(
                "ec2",
                region,
                "authorize_security_group_ingress",
                f"opening SSH to {cidr} on {name}",
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": cidr, "Description": "gpujobs launcher"}],
                    }
                ],
            )
        except ProviderError as exc:
            if exc.code != "InvalidPermission.Duplicate":
                raise
        if existing:
            self._close_stale_ssh(region, name, group_id, existing[0], keep=cidr)
        return group_id

    def _close_stale_ssh(
        self, region: str, name: str, group_id: str, group: dict[str, Any], keep: str
    ) -> None:
        """A job re-provisioned from another address (a laptop that moved) admits the new one
        only: the launcher's old /32s are revoked, so SSH stays open to the caller alone."""
        stale = [
            ip_range["CidrIp"]
            for permission in group.get("IpPermissions", [])
            if permission.get("IpProtocol") == "tcp"
            and permission.get("FromPort") == 22
            and permission.get("ToPort") == 22
            for ip_range in permission.get("IpRanges", [])
            if ip_range.get("CidrIp") != keep
        ]
        if not stale:
            return
        self.clients.call(
            "ec2",
            region,
            "revoke_security_group_ingress",
            f"closing SSH to the old address(es) {', '.join(stale)} on {name}",
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": cidr} for cidr in stale],
                }
            ],
        )

    def _let_members_meet(self, region: str, job_id: str, group_id: str) -> None:
        """A multi-node job's instances reach each other on its rendezvous ports, and only
        they: the rules admit the security group itself, no address range."""
        ports = member_ports(job_id)
        try:
            self.clients.call(
                "ec2",
                region,
                "authorize_security_group_ingress",
                f"opening the rendezvous ports between job {job_id}'s nodes",
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": low,
                        "ToPort": high,
                        "UserIdGroupPairs": [
                            {"GroupId": group_id, "Description": "gpujobs rendezvous"}
                        ],
                    }
                    for low, high in ports
                ],
            )
        except ProviderError as exc:
            if exc.code != "InvalidPermission.Duplicate":
                raise

    def _image(self, region: str) -> tuple[str, str]:
        """(image id, root device name) of the newest Deep Learning Base GPU AMI in the region."""
        if region not in self._images:
            images = self.clients.call(
                "ec2",
                region,
                "describe_images",
                f"finding a GPU image in {region}",
                Owners=["amazon"],
                Filters=[
                    {"Name": "name", "Values": [IMAGE_NAME]},
                    {"Name": "state", "Values": ["available"]},
                    {"Name": "architecture", "Values": ["x86_64"]},
                ],
            )["Images"]
            if not images:
                raise ProvisioningError(
                    f"aws has no image named {IMAGE_NAME!r} in {region}; leave the region out"
                )
            # Release names end in their date, which also breaks ties between creation dates.
            newest = max(images, key=lambda image: (image.get("CreationDate", ""), image["Name"]))
            self._images[region] = (newest["ImageId"], newest.get("RootDeviceName", "/dev/sda1"))
        return self._images[region]

    def _instance(
        self,
        region: str,
        job_id: str,
        rank: int,
        offer: Offer,
        key_name: str | None,
        group_id: str,
        created_here: list[str],
        restart: int,
        port_band: tuple[int, int] | None,
    ) -> dict[str, Any]:
        existing = self._job_instances(region, job_id, rank=rank)
        if existing:
            return existing[0]  # provisioning the same job again is the same node
        image_id, root_device = self._image(region)
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            # A new token per restart: AWS answers a token whose instance was terminated with
            # IdempotentInstanceTerminated instead of making a new one.
            "ClientToken": f"gpujobs-{job_id}-{rank}{f'-r{restart}' if restart else ''}"[:64],
            "SecurityGroupIds": [group_id],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "UserData": Bootstrap(
                job_id, self.settings, self.max_hours, port_band=port_band
            ).render(),
            "BlockDeviceMappings": [
                {
                    "DeviceName": root_device,
                    "Ebs": {
                        "VolumeSize": int(self.disk_gb),
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "TagSpecifications": self._tags(job_id, "instance", **{RANK_TAG: str(rank)})
            + self._tags(job_id, "volume"),
        }
        if key_name:
            params["KeyName"] = key_name
        if offer.zone:
            params["Placement"] = {"AvailabilityZone": offer.zone}
        if offer.spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        code = quota_code(offer.instance_type, offer.spot)
        instance = self.clients.call(
            "ec2",
            region,
            "run_instances",
            f"{'spot ' if offer.spot else ''}{offer.instance_type} in {region}",
            quota_url=request_url(region, code.code) if code else "",
            **params,
        )["Instances"][0]
        created_here.append(instance["InstanceId"])
        return dict(instance)

    def _node(self, job_id: str, offer: Offer, instance: dict[str, Any]) -> Node:
        tags = _tags(instance)
        return Node(
            provider=self.name,
            job_id=job_id,
            node_id=instance["InstanceId"],
            rank=int(tags.get(RANK_TAG, "0")),
            host=instance.get("PublicIpAddress") or "",
            port=22,
            user=self.settings.ssh_user,
            workdir=self.settings.workdir(job_id),
            transport="ssh",
            uses_job_key=True,
            runtime="docker",
            cache_dir=self.settings.cache_dir,
            ready_file=self.settings.ready_file,
            instance_type=offer.instance_type,
            region=offer.region,
            price_per_hour=offer.price_per_hour,
            spot=offer.spot,
        )

    def _describe(self, region: str, instance_id: str) -> dict[str, Any] | None:
        try:
            reservations = self.clients.call(
                "ec2",
                region,
                "describe_instances",
                f"describing {instance_id}",
                InstanceIds=[instance_id],
            )["Reservations"]
        except ProviderError as exc:
            if exc.code == "InvalidInstanceID.NotFound":
                return None
            raise
        instances = [i for r in reservations for i in r.get("Instances", [])]
        return dict(instances[0]) if instances else None

    def _job_instances(
        self, region: str, job_id: str, *, rank: int | None = None, live_only: bool = True
    ) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_KEY}", "Values": [job_id]}]
        if rank is not None:
            filters.append({"Name": f"tag:{RANK_TAG}", "Values": [str(rank)]})
        if live_only:
            filters.append({"Name": "instance-state-name", "Values": _LIVE_STATES})
        reservations = self.clients.pages(
            "ec2",
            region,
            "describe_instances",
            "Reservations",
            f"listing job {job_id}'s instances",
            Filters=filters,
        )
        return [dict(i) for r in reservations for i in r.get("Instances", [])]

    def _clean_up(self, region: str, job_id: str, instance_ids: list[str]) -> None:
        """Terminate the job's instances (those given and any other carrying its tag), wait until
        AWS says terminated, then delete its security group and key pair. Idempotent."""
        live = {i["InstanceId"] for i in self._job_instances(region, job_id)}
        targets = sorted(live.union(instance_ids))
        if targets:
            self._terminate_and_wait(region, targets)
        self._delete_security_group(region, job_id)
        self._delete_key_pair(region, f"gpujobs-{job_id}")

    def _terminate_and_wait(self, region: str, instance_ids: list[str]) -> None:
        try:
            self.clients.call(
                "ec2",
                region,
                "terminate_instances",
                f"terminating {', '.join(instance_ids)}",
                InstanceIds=instance_ids,
            )
        except ProviderError as exc:
            if exc.code != "InvalidInstanceID.NotFound":
                raise
        self._wait_terminated(region, instance_ids)

    def _delete_key_pair(self, region: str, name: str) -> None:
        try:
            self.clients.call(
                "ec2", region, "delete_key_pair", f"deleting key pair {name}", KeyName=name
            )
        except ProviderError as exc:
            if exc.code != "InvalidKeyPair.NotFound":
                raise

    def _wait_terminated(self, region: str, instance_ids: list[str]) -> None:
        deadline = self.clock.monotonic() + self.timings.terminate_s
        while True:
            states = {}
            for instance_id in instance_ids:
                instance = self._describe(region, instance_id)
                states[instance_id] = instance["State"]["Name"] if instance else "terminated"
            left = [i for i, state in states.items() if state != "terminated"]
            if not left:
                return
            if self.clock.monotonic() >= deadline:
                raise NotTerminatedError(
                    f"aws instances {', '.join(left)} in {region} are not terminated after "
                    f"{self.timings.terminate_s:g} s; check the EC2 console"
                )
            self.clock.sleep(self.timings.poll_s)

    def _delete_security_group(self, region: str, job_id: str) -> None:
        name = f"gpujobs-{job_id}"
        for group in self._job_security_groups(region, name):
            self._delete_group(region, group["GroupId"], name)

    def _delete_group(self, region: str, group_id: str, name: str) -> None:
        deadline = self.clock.monotonic() + self.timings.terminate_s
        while True:
            try:
                self.clients.call(
                    "ec2", region, "delete_security_group", f"deleting {name}", GroupId=group_id
                )
                return
            except ProviderError as exc:
                if exc.code == "InvalidGroup.NotFound":
                    return
                # A terminated instance's network interface lets go of the group a little
                # after the instance is gone.
                if exc.code != "DependencyViolation" or self.clock.monotonic() >= deadline:
                    raise NotTerminatedError(
                        f"aws security group {group_id} ({name}) in {region} could "
                        f"not be deleted: {exc}"
                    ) from None
                self.clock.sleep(self.timings.poll_s)

    def _instances_using(self, region: str, group_id: str) -> list[str]:
        """Instances not terminated that are in the security group."""
        found = self._live_instances(
            region, f"listing the instances in {group_id}", "instance.group-id", group_id
        )
        return sorted(instance["InstanceId"] for instance in found)

    def _per_region(self, listing: Callable[[str], list[T]]) -> list[list[T]]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(listing, self.catalog.regions()))

    def _tagged_instances(self, region: str) -> list[dict[str, Any]]:
        return self._live_instances(
            region, f"listing gpujobs instances in {region}", "tag-key", TAG_KEY
        )

    def _live_instances(
        self, region: str, what: str, name: str, value: str
    ) -> list[dict[str, Any]]:
        """Instances not terminated in `region` matching one describe_instances filter."""
        reservations = self.clients.pages(
            "ec2",
            region,
            "describe_instances",
            "Reservations",
            what,
            Filters=[
                {"Name": name, "Values": [value]},
                {"Name": "instance-state-name", "Values": _LIVE_STATES},
            ],
        )
        return [dict(i) for r in reservations for i in r.get("Instances", [])]

    def _found_offer(self, region: str, instance: dict[str, Any]) -> Offer:
        """What a found instance was launched as, priced from the catalog (0 when unknown)."""
        spot = instance.get("InstanceLifecycle") == "spot"
        price = self.catalog.price(instance["InstanceType"], region, spot=spot) or 0.0
        return Offer.model_construct(
            provider=self.name,
            instance_type=instance["InstanceType"],
            region=region,
            price_per_hour=price,
            spot=spot,
        )

    def _owned_in(self, region: str) -> list[Node]:
        return [
            self._node(
                _tags(instance).get(TAG_KEY, ""), self._found_offer(region, instance), instance
            )
            for instance in self._tagged_instances(region)
        ]

    def _tagged_in(self, region: str) -> list[TaggedResource]:
        tag_filter = [{"Name": "tag-key", "Values": [TAG_KEY]}]
        found = []
        for instance in self._tagged_instances(region):
            found.append(
                self._resource(
                    "instance",
                    instance["InstanceId"],
                    region,
                    instance,
                    created=instance.get("LaunchTime"),
                    price=self._found_offer(region, instance).price_per_hour,
                    node_id=instance["InstanceId"],
                )
            )
        for group in self.clients.pages(
            "ec2",
            region,
            "describe_security_groups",
            "SecurityGroups",
            f"listing gpujobs security groups in {region}",
            Filters=tag_filter,
        ):
            found.append(self._resource("security-group", group["GroupId"], region, group))
        for pair in self.clients.call(
            "ec2",
            region,
            "describe_key_pairs",
            f"listing gpujobs key pairs in {region}",
            Filters=tag_filter,
        )["KeyPairs"]:
            found.append(
                self._resource(
                    "key-pair", pair["KeyName"], region, pair, created=pair.get("CreateTime")
                )
            )
        return found

    def _resource(
        self,
        kind: str,
        resource_id: str,
        region: str,
        described: dict[str, Any],
        *,
        created: datetime | None = None,  # AWS keeps none for security groups
        price: float = 0.0,
        node_id: str | None = None,
    ) -> TaggedResource:
        return TaggedResource(
            provider=self.name,
            kind=kind,
            resource_id=resource_id,
            region=region,
            job_id=_tags(described).get(TAG_KEY, ""),
            created_at=created.timestamp() if created else None,
            price_per_hour=price,
            node_id=node_id,
        )


def _tags(described: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
