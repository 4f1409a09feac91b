"""The providers gpujobs can place a job on. Cloud SDKs are imported only inside their provider."""

from __future__ import annotations

from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Provider


def default_providers(home: HomeLayout) -> dict[str, Provider]:
    from gpujobs.providers.local import LocalProvider

    return {"local": LocalProvider(home.work)}
