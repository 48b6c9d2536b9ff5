"""Paper reproductions: each module trains what its paper compares and writes a report."""
from __future__ import annotations

import platform
import sys
from typing import Any

import torch

from ... import __version__


def cpu_name() -> str:
    """The CPU's model name (CPU training is bit-identical on one machine, not across machines)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str) -> dict[str, Any]:
    """What every reproduction's results.json records about how it was produced."""
    return {"device": device, "command": " ".join(sys.argv),
            "versions": {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "hardware": {"platform": platform.platform(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
                         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
