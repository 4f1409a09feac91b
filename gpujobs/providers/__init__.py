"""The providers gpujobs can place a job on. Cloud SDKs are imported only inside their provider,
when a call needs them, so building this table costs no SDK import."""

from __future__ import annotations

import functools
import os

from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Provider

CALLER_IP_ENV = "GPUJOBS_CALLER_IP"


@functools.cache
def caller_address() -> str:
    """The caller's public IPv4, for firewall rules: GPUJOBS_CALLER_IP, else looked up once."""
    from gpujobs.providers.cloud import lookup_caller_address

    return os.environ.get(CALLER_IP_ENV) or lookup_caller_address()


def default_providers(home: HomeLayout) -> dict[str, Provider]:
    """Every provider, unconfigured where settings come from the spec (see SpecConfigured)."""
    from gpujobs.providers.aws import AwsProvider
    from gpujobs.providers.gcp import GcpProvider
    from gpujobs.providers.local import LocalProvider
    from gpujobs.providers.paperspace import PaperspaceProvider
    from gpujobs.providers.slurm import SlurmProvider
    from gpujobs.providers.ssh import SshProvider
    from gpujobs.remote.ssh import HostKeyPins

    return {
        "local": LocalProvider(home.work),
        "ssh": SshProvider(None, HostKeyPins(home.known_hosts)),
        "slurm": SlurmProvider(None, HostKeyPins(home.known_hosts)),
        "aws": AwsProvider(caller_address=caller_address),
        "gcp": GcpProvider(caller_address=caller_address),
        "paperspace": PaperspaceProvider(caller_address=caller_address),
    }
