"""The providers gpujobs can place a job on. Cloud SDKs are imported only inside their provider,
when a call needs them, so building this table costs no SDK import."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping

from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Provider

CALLER_IP_ENV = "GPUJOBS_CALLER_IP"


@functools.cache
def caller_address() -> str:
    """The caller's public IPv4, for firewall rules: GPUJOBS_CALLER_IP, else looked up once."""
    from gpujobs.providers.cloud import lookup_caller_address

    return os.environ.get(CALLER_IP_ENV) or lookup_caller_address()


class LazyProviders(Mapping[str, Provider]):
    """Providers by name, each made (its module imported) when first asked for: a launch on
    an ssh host never imports the cloud providers (Paperspace's httpx alone costs a few
    tenths of a second). `adapt` turns each as it is made (a spec's settings, see for_spec)."""

    def __init__(
        self,
        makers: Mapping[str, Callable[[], Provider]],
        adapt: Callable[[Provider], Provider] | None = None,
        made: dict[str, Provider] | None = None,
    ) -> None:
        self._makers = makers
        self._adapt = adapt
        self._made = made if made is not None else {}  # shared with the adapted views
        self._adapted: dict[str, Provider] = {}

    def adapted(self, adapt: Callable[[Provider], Provider]) -> LazyProviders:
        return LazyProviders(self._makers, adapt, self._made)

    def __getitem__(self, name: str) -> Provider:
        if name in self._adapted:
            return self._adapted[name]
        if name not in self._made:
            self._made[name] = self._makers[name]()  # KeyError: no such provider
        provider = self._made[name]
        if self._adapt is not None:
            provider = self._adapt(provider)
        self._adapted[name] = provider
        return provider

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def default_providers(home: HomeLayout) -> LazyProviders:
    """Every provider, unconfigured where settings come from the spec (see SpecConfigured)."""

    def local() -> Provider:
        from gpujobs.providers.local import LocalProvider

        return LocalProvider(home.work)

    def ssh() -> Provider:
        from gpujobs.providers.ssh import SshProvider
        from gpujobs.remote.ssh import HostKeyPins

        return SshProvider(None, HostKeyPins(home.known_hosts))

    def slurm() -> Provider:
        from gpujobs.providers.slurm import SlurmProvider
        from gpujobs.remote.ssh import HostKeyPins

        return SlurmProvider(None, HostKeyPins(home.known_hosts))

    def aws() -> Provider:
        from gpujobs.providers.aws import AwsProvider

        return AwsProvider(caller_address=caller_address)

    def gcp() -> Provider:
        from gpujobs.providers.gcp import GcpProvider

        return GcpProvider(caller_address=caller_address)

    def paperspace() -> Provider:
        from gpujobs.providers.paperspace import PaperspaceProvider

        return PaperspaceProvider(caller_address=caller_address)

    return LazyProviders(
        {
            "local": local,
            "ssh": ssh,
            "slurm": slurm,
            "aws": aws,
            "gcp": gcp,
            "paperspace": paperspace,
        }
    )
