"""Device names as users write them (auto, cpu, cuda, cuda:N, mps), checked against this machine."""
from __future__ import annotations

import re

import torch

from .errors import DeviceError

_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for `name` ('auto' = CUDA when available, else the CPU); a device this
    machine lacks or a misspelled name is a DeviceError that says what would be valid."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str) or not _NAME.match(name.strip().lower()):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise DeviceError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__}, "
                              f"{build}); use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' requested but Apple's MPS backend is not available; use --device cpu")
    return torch.device(name)
