"""torch.distributed helpers shared by training and evaluation: who am I, start from torchrun's
environment, gather per-sample results. Everything degrades to one process when no group exists."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (the process that writes files and prints)."""
    return world()[0] == 0


def init_from_env(device: torch.device | str | None = None) -> bool:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1);
    NCCL for CUDA devices, gloo otherwise. Returns True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def local_device(device: torch.device | str) -> torch.device:
    """Under torchrun each rank takes the GPU of its LOCAL_RANK ("cuda" -> "cuda:<local rank>")."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def backend_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_padded(t: Tensor, rows: int, fill: float | int = 0) -> list[Tensor]:
    """Gather a tensor whose first dimension differs between ranks (at most `rows`): each rank pads
    to `rows`, all ranks receive every rank's tensor, trimmed back to its true length."""
    _, size = world()
    if size == 1:
        return [t]
    dev = backend_device()
    n = torch.tensor([t.shape[0]], device=dev)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    padded = t.new_full((rows, *t.shape[1:]), fill).to(dev)
    padded[: t.shape[0]] = t.to(dev)
    out = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(out, padded)
    return [o[: int(c)].to(t.device) for o, c in zip(out, counts)]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers over all ranks (float64 on the backend's device)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=backend_device())
    dist.all_reduce(t)
    return t.tolist()
