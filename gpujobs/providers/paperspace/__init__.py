"""The Paperspace provider (machines API over httpx). See provider.py for what it does and why."""

from gpujobs.providers.paperspace.provider import PaperspaceProvider

__all__ = ["PaperspaceProvider"]
