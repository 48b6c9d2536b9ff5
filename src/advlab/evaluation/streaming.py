"""Worst-case evaluation over a stream of batches (a DataLoader or any iterable of (x, y)): each
chunk runs through the whole suite and its per-sample results go to disk before the next chunk is
read, so memory is bounded by the batch size whatever the data size, and a killed evaluation
resumes from the last finished chunk. Resuming re-reads the finished chunks and checks each
against the sha256 recorded for it, so the guard covers all of the data, not a prefix."""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..accel import accelerate, resolve_accel
from ..attacks import Attack
from ..data.pairs import iter_pairs
from ..attacks.base import check_label_range, check_labels, check_model_dtype
from ..distributed import all_gather_padded
from ..distributed import world as dist_world
from ..errors import CheckpointError, InputError
from ..fingerprint import data_fingerprint
from ..io import atomic_write_json, load_tensors, save_tensors
from ..progress import progress_bar, progress_enabled
from ..threat import ThreatModel
from .checks import GradientMaskingWarning, check_black_box_beats_white_box
from .memory import attack_in_pieces
from .result import AttackStats, RobustnessResult
from .state import StaleStateError, evaluation_fingerprint, fingerprint_differences
from .suites import build_suite

FORMAT = "advlab-eval-stream-1"
MANIFEST = "manifest.json"
_COST_KEYS = ("broken", "attacked", "n_forward", "n_backward", "seconds")


@dataclass
class ChunkOutcome:
    """One chunk's per-sample results and what each attack of the suite cost on it."""

    clean_correct: Tensor
    robust: Tensor
    broken_by: Tensor
    adv_norms: Tensor
    costs: Tensor                  # float64 [n_attacks, 5]: broken, attacked, forwards, backwards, seconds
    x_adv: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        out = {"clean_correct": self.clean_correct.to(torch.uint8), "robust": self.robust.to(torch.uint8),
               "broken_by": self.broken_by, "adv_norms": self.adv_norms, "costs": self.costs}
        if self.x_adv is not None:
            out["x_adv"] = self.x_adv
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> "ChunkOutcome":
        return cls(t["clean_correct"].bool(), t["robust"].bool(), t["broken_by"], t["adv_norms"], t["costs"],
                   t.get("x_adv"))


def is_batch_stream(data: Any) -> bool:
    """True for a DataLoader or another iterable of batches (not an (x, y) pair of tensors)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return False
    return isinstance(data, Iterable) and not isinstance(data, (Tensor, str, bytes, dict))


def _stream_length(stream: Any) -> int | None:
    dataset = getattr(stream, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


class StreamState:
    """A streamed evaluation's directory: manifest.json (fingerprint, one entry per finished chunk,
    flags) and chunk_NNNNNN.safetensors (that chunk's per-sample results and adversarial inputs)."""

    def __init__(self, root: str | Path | None, fingerprint: dict[str, str], writer: bool) -> None:
        self.root = Path(root) if root is not None else None
        self.fingerprint, self.writer = fingerprint, writer
        self.chunks: list[dict[str, Any]] = []
        self.flags: list[str] = []
        self.accel: dict[str, Any] | None = None

    def chunk_path(self, i: int) -> Path:
        assert self.root is not None
        return self.root / f"chunk_{i:06d}.safetensors"

    def load(self, restart: bool) -> None:
        if self.root is None:
            return
        manifest = self.root / MANIFEST
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointError(f"{self.root} is a file; a streamed evaluation keeps its state in a directory")
        if restart and self.writer and self.root.is_dir():
            for f in [manifest, *self.root.glob("chunk_*.safetensors")]:
                f.unlink(missing_ok=True)
        if not manifest.exists():
            return
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{manifest} is corrupt: {e}") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise CheckpointError(f"{manifest} is not an advlab streamed-evaluation manifest")
        diff = fingerprint_differences(saved.get("fingerprint", {}), self.fingerprint)
        if diff:
            raise StaleStateError(f"{self.root} belongs to another evaluation: different {'; '.join(diff)}; "
                                  "evaluate afresh with restart=True (CLI: --restart) or pass another state_path")
        self.chunks, self.flags, self.accel = saved["chunks"], saved["flags"], saved.get("accel")

    def check_chunk(self, i: int, data_sha: str, rows: int) -> None:
        """A finished chunk re-read on resume must be the data that was evaluated."""
        rec = self.chunks[i]
        if rec["data"] != data_sha or rec["n"] != rows:
            raise StaleStateError(f"{self.root} belongs to another evaluation: different data (batch {i}: "
                                  f"{rec['n']} points sha256 {rec['data'][:12]} in the state, {rows} points "
                                  f"{data_sha[:12]} now); evaluate afresh with restart=True (CLI: --restart)")

    def read(self, i: int) -> ChunkOutcome:
        tensors, _ = load_tensors(self.chunk_path(i))
        return ChunkOutcome.from_tensors(tensors)

    def write(self, outcome: ChunkOutcome, data_sha: str) -> None:
        self.chunks.append({"n": int(outcome.robust.numel()), "data": data_sha})
        if self.root is None or not self.writer:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        save_tensors(self.chunk_path(len(self.chunks) - 1), outcome.tensors())  # data first, then the manifest
        self.save_manifest()

    def save_manifest(self) -> None:
        if self.root is None or not self.writer:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / MANIFEST, {"format": FORMAT, "fingerprint": self.fingerprint,
                                                 "chunks": self.chunks, "flags": self.flags, "accel": self.accel})


def attack_chunk(model: nn.Module, attacks: Sequence[Attack], threat: ThreatModel, x: Tensor, y: Tensor,
                 piece: int, keep_adversarials: bool, draws: int = 1) -> tuple[ChunkOutcome, int]:
    """The whole suite on one chunk: each attack on the points still robust, worst case per point
    (a randomized model, draws > 1, judged by its prediction averaged over that many passes)."""
    from .autoattack import mean_probabilities
    clean = mean_probabilities(model, x, draws)
    check_label_range(y, clean.shape[1])
    correct = (clean.argmax(1) == y).cpu()
    robust, n = correct.clone(), y.shape[0]
    broken_by, norms = torch.full((n,), -1), torch.full((n,), float("nan"))
    costs = torch.zeros(len(attacks), len(_COST_KEYS), dtype=torch.float64)
    x_adv = x.detach().cpu().clone() if keep_adversarials else None
    for ai, attack in enumerate(attacks):
        idx = robust.nonzero().squeeze(1)
        if not idx.numel():
            continue
        yi = y[idx.to(y.device)]
        res, piece = attack_in_pieces(attack, model, x[idx.to(x.device)], yi, piece)
        broken = (res.success if draws == 1 else mean_probabilities(model, res.x_adv, draws).argmax(1) != yi).cpu()
        hit = idx[broken]
        robust[hit], broken_by[hit] = False, ai
        norms[hit] = res.norms.detach().float().cpu()[broken]
        if x_adv is not None:
            x_adv[hit] = res.x_adv.detach().cpu()[broken].to(x_adv.dtype)
        costs[ai] = torch.tensor([float(broken.sum()), float(idx.numel()), res.n_forward, res.n_backward,
                                  res.seconds], dtype=torch.float64)
    return ChunkOutcome(correct, robust, broken_by, norms, costs, x_adv), piece


def _gather(outcome: ChunkOutcome | None, rows: int, n_attacks: int, keep: bool,
            template: Tensor) -> list[ChunkOutcome]:
    """Every rank's outcome of this round (in rank order), on every rank."""
    if outcome is None:  # this rank had no chunk in the last round
        empty = torch.zeros(0, dtype=torch.bool)
        outcome = ChunkOutcome(empty, empty, torch.zeros(0, dtype=torch.int64), torch.zeros(0),
                               torch.zeros(n_attacks, len(_COST_KEYS), dtype=torch.float64),
                               template[:0].detach().cpu() if keep else None)
    parts = [all_gather_padded(outcome.clean_correct.to(torch.uint8), rows),
             all_gather_padded(outcome.robust.to(torch.uint8), rows),
             all_gather_padded(outcome.broken_by, rows, fill=-1), all_gather_padded(outcome.adv_norms, rows),
             all_gather_padded(outcome.costs, n_attacks)]
    advs = all_gather_padded(outcome.x_adv, rows) if keep else [None] * len(parts[0])
    return [ChunkOutcome(c.bool(), r.bool(), b, m, k, a) for c, r, b, m, k, a in zip(*parts, advs)]


def evaluate_stream(model: nn.Module, stream: Iterable[Any], threat: ThreatModel,
                    suite: str | Sequence[Attack] = "standard", *, batch_size: int = 500, seed: int = 0,
                    state_path: str | Path | None = None, checks: bool = True, keep_adversarials: bool = False,
                    device: torch.device | str | None = None, progress: bool | None = None, accel: str = "off",
                    verify_samples: int = 500, restart: bool = False) -> RobustnessResult:
    """evaluate_robustness over a DataLoader or an iterable of (x, y) batches (see there). The
    batches are the chunks: keep their order fixed (no shuffling) for resume. state_path is a
    directory; keep_adversarials writes each chunk's adversarial inputs there (result.adversarials_dir,
    read back with load_adversarials) instead of holding them in memory."""
    if keep_adversarials and state_path is None:
        raise InputError("a streamed evaluation keeps adversarial examples on disk: pass state_path (a directory)")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    attacks = build_suite(suite, threat, seed)   # re-chosen on the first batch (auto, fast, randomized models)
    suite_name, notes, draws = None, [], 1
    rank, world = dist_world()
    reference_model = model
    path, fast_model, state, piece = None, model, None, batch_size
    bar = None
    chunk_index = 0
    batches = iter_pairs(stream)
    outcomes: list[ChunkOutcome] = []

    def finish_round(xs: list[Tensor], ys: list[Tensor], shas: list[str]) -> None:
        nonlocal piece
        mine = None
        if rank < len(xs):
            mine, piece = attack_chunk(fast_model, attacks, threat, xs[rank].to(dev), ys[rank].to(dev), piece,
                                       keep_adversarials, draws)
        rows = max(int(x.shape[0]) for x in xs)
        round_outcomes = _gather(mine, rows, len(attacks), keep_adversarials, xs[0])[:len(xs)] if world > 1 \
            else [mine]
        for k, outcome in enumerate(round_outcomes):
            i = len(state.chunks)
            if i == 0:
                _first_chunk_checks(state, outcome, xs[0].to(dev), ys[0].to(dev))
            state.write(outcome, shas[k])
            outcomes.append(_strip_adversarials(outcome))
            bar.update(int(outcome.robust.numel()))
        bar.set_postfix(robust=int(sum(int(o.robust.sum()) for o in outcomes)))

    def _first_chunk_checks(st: StreamState, outcome: ChunkOutcome, x0: Tensor, y0: Tensor) -> None:
        from .autoattack import _input_checks, _verify_fast_path
        if checks:
            st.flags += _input_checks(fast_model, x0, y0, outcome.clean_correct, dev)
        if path.enabled and path.exact:
            st.accel = {"path": path.describe(), "verified": "exact fp32 path, nothing to verify"}
        elif path.enabled:
            view = {"clean_correct": outcome.clean_correct, "robust": outcome.robust,
                    "broken_by": outcome.broken_by, "adv_norms": outcome.adv_norms}
            if outcome.x_adv is not None:
                view["x_adv"] = outcome.x_adv
            st.accel = _verify_fast_path(reference_model, fast_model, attacks[0], x0, y0, view, dev,
                                         verify_samples, piece)
            st.accel["path"] = path.describe()
            outcome.costs[0, 0] = float((outcome.broken_by == 0).sum())  # the merged fp32 breaks count too

    xs: list[Tensor] = []
    ys: list[Tensor] = []
    shas: list[str] = []
    for x, y in batches:
        if state is None:  # the first batch decides the device, the fast path and the fingerprint
            threat.check_inputs(x)
            check_model_dtype(model, x)
            dev = torch.device(device) if device is not None else x.device
            path = resolve_accel(accel, dev)
            fast_model = accelerate(model, path)
            from .autoattack import choose_suite
            attacks, suite_name, notes, draws = choose_suite(suite, model, x, check_labels(y, x.shape[0], x.device),
                                                             threat, seed, dev, checks)
            fp = evaluation_fingerprint(reference_model, None, None, threat, attacks, seed, path.describe())
            fp["keep_adversarials"] = str(bool(keep_adversarials))
            state = StreamState(state_path, fp, writer=rank == 0)
            state.load(restart and rank == 0)
            bar = progress_bar(_stream_length(stream), f"{len(attacks)} attacks per batch", unit="pt",
                               enabled=progress_enabled(progress) and rank == 0)
        threat.check_inputs(x)
        y = check_labels(y, x.shape[0], x.device)
        sha = data_fingerprint(x.detach().cpu(), y.detach().cpu())
        if chunk_index < len(state.chunks):  # finished before: check it is the same data, read its results
            state.check_chunk(chunk_index, sha, int(x.shape[0]))
            outcomes.append(_strip_adversarials(state.read(chunk_index)))
            bar.update(int(x.shape[0]))
            chunk_index += 1
            continue
        chunk_index += 1
        xs.append(x), ys.append(y), shas.append(sha)
        if len(xs) == world:
            finish_round(xs, ys, shas)
            xs, ys, shas = [], [], []
    if state is None:
        raise InputError("the data stream yielded no batches")
    if chunk_index < len(state.chunks):
        raise StaleStateError(f"{state_path} belongs to another evaluation: the saved state has {len(state.chunks)} "
                              f"batches, the data now {chunk_index}; evaluate afresh with restart=True")
    if xs:
        finish_round(xs, ys, shas)
    bar.close()
    state.save_manifest()
    result = _result(threat, attacks, state, outcomes, seed, checks, keep_adversarials, notes)
    result.suite, result.judge_draws = suite_name, draws
    return result


def _strip_adversarials(outcome: ChunkOutcome) -> ChunkOutcome:
    return ChunkOutcome(outcome.clean_correct, outcome.robust, outcome.broken_by, outcome.adv_norms, outcome.costs)


def _result(threat: ThreatModel, attacks: Sequence[Attack], state: StreamState, outcomes: list[ChunkOutcome],
            seed: int, checks: bool, keep_adversarials: bool, notes: list[str]) -> RobustnessResult:
    cat = lambda name: torch.cat([getattr(o, name) for o in outcomes])  # noqa: E731
    broken_by = cat("broken_by")
    costs = torch.stack([o.costs for o in outcomes]).sum(0)
    stats = [AttackStats(a.name, *[int(v) for v in row[:4].tolist()], float(row[4])) for a, row in zip(attacks, costs)]
    flags = notes + list(state.flags)
    accel_info = state.accel
    if accel_info is not None and "within_tolerance" in accel_info and not accel_info["within_tolerance"]:
        flags.append(f"fast path: {attacks[0].name} robust accuracy {accel_info['fast']:.4f} on the fast path vs "
                     f"{accel_info['fp32']:.4f} in fp32 on {accel_info['n']} points (> 0.5 points apart)")
    if checks:
        flags += check_black_box_beats_white_box(broken_by, [a.name for a in attacks],
                                                 [a.uses_gradients for a in attacks])
    for flag in flags:
        warnings.warn(flag, GradientMaskingWarning, stacklevel=3)
    return RobustnessResult(threat=threat, clean_correct=cat("clean_correct"), robust=cat("robust"),
                            broken_by=broken_by, adv_norms=cat("adv_norms"), attacks=stats, flags=flags, seed=seed,
                            accel=accel_info,
                            adversarials_dir=str(state.root) if keep_adversarials and state.root else None)


def load_adversarials(state_dir: str | Path) -> Iterator[Tensor]:
    """The adversarial inputs a streamed evaluation kept, one tensor per chunk in data order
    (the clean input where no attack succeeded)."""
    root = Path(state_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{root} holds no readable streamed-evaluation manifest: {e}") from None
    for i in range(len(manifest.get("chunks", []))):
        tensors, _ = load_tensors(root / f"chunk_{i:06d}.safetensors")
        if "x_adv" not in tensors:
            raise CheckpointError(f"{root} was evaluated without keep_adversarials")
        yield tensors["x_adv"]


