"""What gpujobs asks GCP to create for a job: the instance and firewall rule specs, built from
an offer and the provider's settings (pure functions, so tests can read them directly)."""

from __future__ import annotations

from gpujobs.errors import ProvisioningError
from gpujobs.providers.base import Offer
from gpujobs.providers.cloud import Bootstrap, CloudNodeSettings
from gpujobs.providers.gcp.models import (
    GPU_MODELS,
    JOB_METADATA_KEY,
    LABEL_KEY,
    FirewallSpec,
    InstanceSpec,
    firewall_name,
    gpu_model,
    gpus_are_bundled,
    group_firewall_name,
    instance_name,
    label_value,
    network_tag,
)

# GCP's own cap comes after the node's shutdown timer (which starts only once it has booted),
# so the node's orderly stop happens first and the cap only catches a node that failed to stop.
CAP_MARGIN_S = 10 * 60
_MAX_RUN_LIMITS_S = (30, 120 * 24 * 3600)  # what the API accepts


def accelerator_for(offer: Offer) -> tuple[str, int] | None:
    """N1 machines take their GPUs as guest accelerators; A2/A3/G2 come with them attached, and
    the API refuses guest accelerators for those."""
    if not offer.gpus or gpus_are_bundled(offer.instance_type):
        return None
    model = gpu_model(offer.gpu, offer.instance_type)
    if model is None:
        raise ProvisioningError(f"gcp: no accelerator type known for GPU {offer.gpu}")
    return GPU_MODELS[model][0], offer.gpus


def max_run_seconds(bootstrap: Bootstrap) -> int | None:
    """scheduling.maxRunDuration: the node's own shutdown time plus a margin, within limits."""
    if bootstrap.shutdown_minutes is None:
        return None
    low, high = _MAX_RUN_LIMITS_S
    return min(max(bootstrap.shutdown_minutes * 60 + CAP_MARGIN_S, low), high)


def instance_spec(
    job_id: str,
    rank: int,
    offer: Offer,
    *,
    image: str,
    disk_gb: int,
    settings: CloudNodeSettings,
    max_hours: float | None,
    ssh_public_key: str | None,
    port_band: tuple[int, int] | None = None,
) -> InstanceSpec:
    # GCP installs the key from ssh-keys, so the bootstrap does not.
    bootstrap = Bootstrap(job_id, settings, max_hours, port_band=port_band)
    metadata = {
        "startup-script": bootstrap.render(),
        "install-nvidia-driver": "True",  # an image without a driver installs it at first boot
        "enable-oslogin": "FALSE",  # with OS Login on, the key in ssh-keys would be ignored
        JOB_METADATA_KEY: job_id,  # the id unsanitised, for owned()
    }
    if ssh_public_key:
        metadata["ssh-keys"] = f"{settings.ssh_user}:{ssh_public_key.strip()}"
    return InstanceSpec(
        name=instance_name(job_id, rank),
        zone=offer.zone or "",
        machine_type=offer.instance_type,
        image=image,
        disk_gb=disk_gb,
        labels={LABEL_KEY: label_value(job_id)},
        metadata=metadata,
        tags=(network_tag(job_id),),
        accelerator=accelerator_for(offer),
        spot=offer.spot,
        max_run_s=max_run_seconds(bootstrap),
    )


def firewall_spec(job_id: str, cidr: str) -> FirewallSpec:
    return FirewallSpec(
        name=firewall_name(job_id),
        # Firewall rules take no labels: the job id lives in the name and here (owned() reads it).
        description=f"{LABEL_KEY}={job_id}; SSH to the job's nodes from its client only",
        source_ranges=(cidr,),
        target_tags=(network_tag(job_id),),
    )


def group_firewall_spec(job_id: str, ports: list[tuple[int, int]]) -> FirewallSpec:
    """A multi-node job's instances to each other, on the given port ranges only: the source is
    the job's own network tag, no address range, so nothing outside the job is admitted."""
    tag = network_tag(job_id)
    return FirewallSpec(
        name=group_firewall_name(job_id),
        description=f"{LABEL_KEY}={job_id}; the job's nodes to each other (rendezvous) only",
        target_tags=(tag,),
        source_tags=(tag,),
        ports=tuple(str(low) if low == high else f"{low}-{high}" for low, high in ports),
    )
