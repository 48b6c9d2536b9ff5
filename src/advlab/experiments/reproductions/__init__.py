"""Paper reproductions: each module trains what its paper compares and writes a report."""
from __future__ import annotations

import platform
import sys
from typing import Any

import torch

from ... import __version__


def provenance(device: str) -> dict[str, Any]:
    """What every reproduction's results.json records about how it was produced."""
    return {"device": device, "command": " ".join(sys.argv),
            "versions": {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "hardware": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
