"""The slurm provider: a university cluster through its login node (see provider.py)."""

from gpujobs.providers.slurm.provider import SlurmProvider

__all__ = ["SlurmProvider"]
