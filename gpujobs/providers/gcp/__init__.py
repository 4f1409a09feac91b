"""The GCP provider (google-cloud-compute, imported only when an API call is made)."""

from gpujobs.providers.gcp.provider import GcpProvider

__all__ = ["GcpProvider"]
