"""Peak memory of a streamed evaluation does not grow with N: evaluate_robustness over a DataLoader
of N synthetic MNIST-shaped points labelled by the model (generated batch by batch, never all in memory), a tiny CNN and
the `fast` suite, each N in a fresh process; prints one JSON line per N with the peak RSS.

    python benchmarks/stream_memory.py --n 10000 --n 100000
"""
from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from advlab import ThreatModel
from advlab.evaluation import evaluate_robustness

class SyntheticMnist(Dataset):
    '''N MNIST-shaped points drawn batch by batch from their first index (nothing is stored),
    labelled by the model itself so that every point is clean-correct and gets attacked.'''
    def __init__(self, n, teacher): self.n, self.teacher = n, teacher
    def __len__(self): return self.n
    def __getitems__(self, idx):
        g = torch.Generator().manual_seed(idx[0])
        x = torch.rand(len(idx), 1, 28, 28, generator=g)
        with torch.no_grad():
            return list(zip(x, self.teacher(x).argmax(1)))

torch.manual_seed(0)
torch.set_num_threads(2)
model = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 13 * 13, 10)).eval()
n, batch, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
res = evaluate_robustness(model, DataLoader(SyntheticMnist(n, model), batch_size=batch), ThreatModel("linf", 0.01),
                          "fast", state_path=state, progress=False)
print(json.dumps({"n": n, "batch": batch, "seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_after_imports_mib": round(base / 1024, 1), "clean_accuracy": res.clean_accuracy,
                  "robust_accuracy": res.robust_accuracy, "points": int(res.robust.numel())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, action="append", help="data sizes (default 10000 and 100000)")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    import tempfile
    for n in args.n or [10_000, 100_000]:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.batch), f"{tmp}/state"],
                                 capture_output=True, text=True, env={"ADVLAB_QUIET": "1", **__import__("os").environ})
            if out.returncode:
                sys.exit(out.stderr)
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
