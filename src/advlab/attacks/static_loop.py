"""Fixed-shape attack loops that a CUDA graph can replay.

An attack iteration written as `body(state)` (a dict of tensors whose shapes never change) runs the
same way on every device: `StepLoop` calls it eagerly, or, on a CUDA device with graphs enabled,
runs the first `warmup` iterations eagerly on a side stream, captures one call as a CUDA graph and
replays it. Either way the iteration is the same Python function: the graph only removes the
per-kernel launch cost of the model's forward and backward passes, which dominates small batches.

What a body must do to be capturable: no host synchronization (no `.item()`, `bool(tensor)`,
boolean-mask indexing or data-dependent shapes) and no new state between calls (everything it
reads or writes lives in `state` or in buffers allocated before the capture).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

State = dict[str, Tensor]
Body = Callable[[State], State]


def graphs_available(device: torch.device) -> bool:
    """True where a CUDA graph can be captured: a CUDA device, and not already inside a capture."""
    return device.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_current_stream_capturing()


class StepLoop:
    """Runs `body` on `state` for a number of iterations, eagerly or by CUDA-graph replay.

    state: the loop's tensors, copied into static buffers (the caller reads the result from `state`
    after `run`); body: one iteration, returning the new values of some or all state entries;
    graph: capture where `graphs_available` (else eager, with the same body); warmup: eager
    iterations before the capture (cuDNN / autograd warm-up, as torch.cuda.graphs requires).
    """

    def __init__(self, body: Body, state: State, *, graph: bool, warmup: int = 2) -> None:
        self.body = body
        self.state = {k: v.clone() for k, v in state.items()}
        device = next(iter(state.values())).device
        self.graph = bool(graph) and graphs_available(device)
        self.warmup = max(int(warmup), 1)
        self.iterations = 0       # iterations run
        self.body_calls = 0       # times the body's Python ran (eager iterations and the capture)
        self.captured: torch.cuda.CUDAGraph | None = None

    @property
    def uncounted(self) -> int:
        """Iterations whose Python side did not run (graph replays) minus the capture's call, which
        ran the Python side without computing: what per-call counters (forward passes) miss."""
        return self.iterations - self.body_calls

    def _step(self) -> None:
        self.body_calls += 1
        new = self.body(self.state)
        # a returned state tensor (e.g. x_old <- x_adv) is read before anything is overwritten
        own = {id(t) for t in self.state.values()}
        new = {k: (v.clone() if id(v) in own else v) for k, v in new.items()}
        for k, v in new.items():
            self.state[k].copy_(v)

    def run(self, n: int, *, before: Callable[[int], None] | None = None,
            stop: Callable[[], bool] | None = None, check_every: int = 0) -> int:
        """Run n iterations; `before(i)` may write into state (e.g. a step size) ahead of iteration i;
        `stop()` is asked every `check_every` iterations (0: never) and ends the loop early when True.
        Returns the number of iterations run."""
        i = 0
        if self.graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                while i < min(self.warmup, n):
                    if before is not None:
                        before(i)
                    self._step()
                    i += 1
            torch.cuda.current_stream().wait_stream(side)
            if i < n:
                self.captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.captured):
                    self._step()
        while i < n:
            if stop is not None and check_every and i % check_every == 0 and i and stop():
                break
            if before is not None:
                before(i)
            if self.captured is not None:
                self.captured.replay()
                self.replays += 1
            else:
                self._step()
            i += 1
        self.iterations += i
        return i
