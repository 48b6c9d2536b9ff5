"""The fast path, switched on by one option (`accel="auto"`): bf16 autocast with fp32 logits (so
attack losses and their gradients' signs are computed in fp32), channels_last for image models, and
optionally torch.compile and CUDA graphs for the attacks' fixed-shape loops (opt-in: `cuda_graphs=True`,
see attacks/static_loop.py). It is a model wrapper, so every attack, evaluation and training loop gets
it unchanged. "auto" turns it on for CUDA devices only: on CPUs bf16 autocast and compile do not pay.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import AdvlabError

ACCEL_MODES = ("off", "auto", "on")


@dataclass(frozen=True)
class FastPath:
    """What the fast path does on one device (all off = the reference fp32 path)."""

    dtype: torch.dtype | None = None   # autocast dtype (bfloat16) or None
    channels_last: bool = False
    compile: bool = False
    # attacks run their iterations on fixed shapes (no early-stop shrinking; broken points keep their
    # best iterate) so that one iteration is captured as a CUDA graph and replayed; on a CPU the same
    # fixed-shape loop runs eagerly
    cuda_graphs: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None or self.channels_last or self.compile or self.cuda_graphs

    @property
    def exact(self) -> bool:
        """True when the path computes the same fp32 numbers (no autocast): nothing to verify."""
        return self.dtype is None

    def describe(self) -> dict[str, object]:
        return {"autocast": str(self.dtype).replace("torch.", "") if self.dtype else None,
                "channels_last": self.channels_last, "compile": self.compile, "cuda_graphs": self.cuda_graphs}


def resolve_accel(accel: str, device: torch.device | str, *, compile: bool | None = None,
                  cuda_graphs: bool = False) -> FastPath:
    """The fast path for `accel` on `device`: 'off'; 'auto': bf16 + channels_last + compile on CUDA,
    channels_last alone (exact fp32) elsewhere; 'on': bf16 + channels_last on any device. compile
    defaults to on for CUDA; cuda_graphs (attack loops replayed as CUDA graphs) is opt-in until a GPU
    run has measured it against the eager loop (benchmarks/gpu_checks.py)."""
    if accel not in ACCEL_MODES:
        raise AdvlabError(f"unknown accel mode {accel!r}; use one of {', '.join(ACCEL_MODES)}")
    dev = torch.device(device)
    if accel == "off":
        return FastPath(cuda_graphs=cuda_graphs)
    if accel == "auto" and dev.type != "cuda":
        return FastPath(channels_last=True, cuda_graphs=cuda_graphs)
    return FastPath(torch.bfloat16, channels_last=True, compile=(dev.type == "cuda") if compile is None else compile,
                    cuda_graphs=cuda_graphs)


class FastModel(nn.Module):
    """Runs `inner` under the fast path and returns fp32 logits. Parameters are shared with `inner`
    (no copy): training or attack-mode flags on the wrapper reach the wrapped model."""

    def __init__(self, inner: nn.Module, path: FastPath) -> None:
        super().__init__()
        self.inner, self.path = inner, path
        if path.channels_last:
            inner.to(memory_format=torch.channels_last)
        self._forward = torch.compile(inner) if path.compile else inner

    def forward(self, x: Tensor) -> Tensor:
        if self.path.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.path.dtype is None:
            return self._forward(x)
        # a CUDA graph must not capture autocast's cast cache (torch.cuda.graphs' rule)
        with torch.autocast(device_type=x.device.type, dtype=self.path.dtype, cache_enabled=not self.path.cuda_graphs):
            out = self._forward(x)
        return out.float()


def accelerate(model: nn.Module, accel: str | FastPath = "auto", device: torch.device | str | None = None) -> nn.Module:
    """`model` wrapped in the fast path (or `model` itself when the path is off on this device)."""
    if isinstance(model, FastModel):
        return model
    if isinstance(accel, FastPath):
        path = accel
    else:
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else "cpu"
        path = resolve_accel(accel, device)
    if (path.dtype is None and not path.compile and not path.cuda_graphs
            and not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return model  # channels_last alone changes nothing for a model without convolutions
    return FastModel(model, path) if path.enabled else model
