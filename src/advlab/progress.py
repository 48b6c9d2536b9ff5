"""Progress bars with an ETA for long jobs (training, attack suites, dataset building, reproductions):
tqdm on a terminal, silent when stderr is not one or when asked to be quiet (`--quiet`, ADVLAB_QUIET=1).
Bars are updated per batch or chunk, never inside an attack's inner loop."""
from __future__ import annotations

import os
import sys
from typing import Any


def quiet() -> bool:
    return os.environ.get("ADVLAB_QUIET", "") not in ("", "0")


def progress_enabled(requested: bool | None = None) -> bool:
    """requested=None: on when stderr is a terminal and advlab is not quiet; True/False: as asked,
    except that quiet always wins."""
    if quiet():
        return False
    return sys.stderr.isatty() if requested is None else bool(requested)


def progress_bar(total: int | None, desc: str, *, enabled: bool | None = None, unit: str = "it",
                 **kwargs: Any):  # noqa: ANN201 - a tqdm bar (disabled ones cost nothing)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled), leave=False,
                dynamic_ncols=True, **kwargs)
