"""Every fenced Python block of the README runs as written (in order, in one namespace), on small
data that the preamble provides under the names the README uses."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.mnist
def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 4 and any("load_mnist" in b for b in blocks)


@pytest.mark.mnist
def test_readme_python_blocks_run(tmp_path, monkeypatch, mnist_cache):
    from advlab.data import load_mnist
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    # the "evaluate your own model" block reads mynet.py, w.pt and test.npz from the working directory
    (tmp_path / "mynet.py").write_text("from torch import nn\nclass Net(nn.Sequential):\n    def __init__(self):\n"
                                       "        super().__init__(nn.Flatten(), nn.Linear(784, 10))\n")
    own = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    torch.save(own.state_dict(), tmp_path / "w.pt")
    import numpy as np
    np.savez(tmp_path / "test.npz", x=(load_mnist("test").x[:20].numpy() * 255).round().astype("uint8"),
             y=load_mnist("test").y[:20].numpy())
    train, test = load_mnist("train"), load_mnist("test")
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    source = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    namespace = {
        "model": model, "source": source, "x_test": test.x[:12], "y_test": test.y[:12],
        "x_train": train.x[:64], "y_train": train.y[:64], "x_val": train.x[64:96], "y_val": train.y[64:96],
        "train": type(train)(train.x[:6], train.y[:6]),
        "my_dataset": torch.utils.data.TensorDataset(test.x[:12], test.y[:12]),
    }
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
        except Exception as e:  # pragma: no cover - the message says which block broke
            raise AssertionError(f"README python block {i} failed: {type(e).__name__}: {e}\n{block}") from e
