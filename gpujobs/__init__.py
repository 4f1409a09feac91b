"""gpujobs: run a PyTorch training job on the cheapest GPU you may get, and always clean up."""

__version__ = "0.1.0"
