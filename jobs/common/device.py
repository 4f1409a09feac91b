"""Device selection (--device) and mixed-precision settings (--amp)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from jobs.common.errors import UsageError


def select_device(choice: str) -> torch.device:
    """``auto`` picks cuda when available; an explicit ``cuda`` without CUDA is a user error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: CUDA is not available on this machine; "
            "use --device auto or --device cpu"
        )
    if choice not in ("cpu", "cuda"):
        raise UsageError(f"--device {choice}: unknown device; use auto, cpu or cuda")
    return torch.device(choice)


@dataclass(frozen=True)
class AmpSettings:
    """Whether and how to autocast. Only CUDA is autocast: on CPU, bf16 autocast is usually
    slower than fp32 for these small models and changes numerics for no gain."""

    enabled: bool
    dtype: torch.dtype | None
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling to avoid underflowing gradients; bf16 and fp32 do not.
        A disabled scaler is a pass-through, so the training step is the same either way."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def amp_settings(device: torch.device, requested: bool) -> AmpSettings:
    if not requested or device.type != "cuda":
        return AmpSettings(enabled=False, dtype=None, device_type=device.type)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AmpSettings(enabled=True, dtype=dtype, device_type=device.type)


def describe(device: torch.device, amp: AmpSettings) -> str:
    """A short human-readable label for the start-up line."""
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    else:
        threads = torch.get_num_threads()
        name += f" ({threads} thread{'s' if threads != 1 else ''})"
    if amp.enabled and amp.dtype is not None:
        name += f", amp {str(amp.dtype).removeprefix('torch.')}"
    return name
