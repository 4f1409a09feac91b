"""The providers gpujobs can place a job on. Cloud SDKs are imported only inside their provider."""

from __future__ import annotations

from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Provider


def default_providers(home: HomeLayout) -> dict[str, Provider]:
    """Every provider, unconfigured where settings come from the spec (see SpecConfigured)."""
    from gpujobs.providers.local import LocalProvider
    from gpujobs.providers.ssh import SshProvider
    from gpujobs.remote.ssh import HostKeyPins

    return {
        "local": LocalProvider(home.work),
        "ssh": SshProvider(None, HostKeyPins(home.known_hosts)),
    }
