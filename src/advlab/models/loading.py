"""Bring your own model: a class or factory named by `file.py:Name`, `package.module:Name` or a zoo
name, weights from safetensors or a torch checkpoint read with `weights_only=True` (never unpickled),
optional per-channel normalization, and models whose output is a tuple, a dict or has `.logits`."""
from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import AdvlabError, CheckpointError
from .normalize import Normalize
from .zoo import build_model, list_models

STATE_KEYS = ("state_dict", "model", "net", "model_state_dict")


class ModelSpecError(AdvlabError):
    """A model spec that names no importable class or factory, or arguments it does not take."""

    exit_code = 2


def _import_object(spec: str) -> Any:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ModelSpecError(f"model spec {spec!r}: use path/to/file.py:Name, package.module:Name or a zoo name "
                             f"({', '.join(list_models())})")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: no file {path}")
        mod_spec = importlib.util.spec_from_file_location(f"advlab_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)  # the user's own code, named by the user
        except Exception as e:  # noqa: BLE001 - any failure of the user's file is reported as one line
            raise ModelSpecError(f"model spec {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ModelSpecError(f"model spec {spec!r}: cannot import {target} ({e})") from None
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module))
        raise ModelSpecError(f"model spec {spec!r}: {target} has no {name!r}; its modules: {', '.join(found) or '-'}")
    return getattr(module, name)


def build_user_model(spec: str, model_args: dict[str, Any] | None = None) -> nn.Module:
    """The nn.Module a spec names, constructed with model_args."""
    args = dict(model_args or {})
    if ":" not in spec:
        return build_model(spec, **args)
    if spec.startswith("timm:"):
        return _timm_model(spec[len("timm:"):], args)
    factory = _import_object(spec)
    try:
        model = factory(**args)
    except TypeError as e:
        raise ModelSpecError(f"model spec {spec!r}: bad arguments {json.dumps(args)}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model spec {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _timm_model(name: str, args: dict[str, Any]) -> nn.Module:
    """timm.create_model(name, pretrained=False, **args): architecture only, weights come from --weights."""
    try:
        import timm
    except ImportError:
        raise ModelSpecError("timm:NAME needs timm (pip install timm, with a torchvision built for this torch)") \
            from None
    except Exception as e:  # noqa: BLE001 - e.g. a torchvision wheel built for another torch
        raise ModelSpecError(f"timm is installed but cannot be imported ({type(e).__name__}: {e}); it needs a "
                             "torchvision built for this torch") from None
    try:
        model = timm.create_model(name, pretrained=False, **args)
    except TypeError as e:
        raise ModelSpecError(f"model spec 'timm:{name}': bad arguments {json.dumps(args)}: {e}") from None
    except RuntimeError as e:  # timm's "Unknown model"
        raise ModelSpecError(f"model spec 'timm:{name}': {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"timm.create_model({name!r}) returned {type(model).__name__}, not an nn.Module")
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Weights from safetensors or a torch checkpoint (`weights_only=True`: a pickle that asks for
    code is refused, nothing runs); a bare state dict or one under state_dict / model / net, with
    DataParallel / DDP `module.` prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from ..io import load_tensors
        tensors, _ = load_tensors(path)
        sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in tensors.items()
              if not k.startswith(("opt.", "rng.", "extra."))}
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path} is not a plain weights file: it asks to run code or load objects that "
                                  f"weights_only=True refuses ({str(e).splitlines()[0][:160]}); save "
                                  "model.state_dict() instead") from None
        except Exception as e:  # noqa: BLE001 - zip/format errors of a corrupt file
            raise CheckpointError(f"{path} is not a readable torch checkpoint: {type(e).__name__}: {e}") from None
        for key in STATE_KEYS:
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} holds no state dict (a dict of tensors, bare or under "
                                  f"{' / '.join(STATE_KEYS)})")
        sd = dict(obj)
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_user_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into model; missing or unexpected keys are a CheckpointError that lists them."""
    sd = read_state_dict(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        raise CheckpointError(f"{path} does not fit the model: missing keys {show(missing) or '-'}; unexpected keys "
                              f"{show(unexpected) or '-'}")
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"{path} does not fit the model: shapes differ for " + ", ".join(
            f"{k} ({tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} in the model)" for k in bad[:4]))
    model.load_state_dict(sd)
    return model


class SelectOutput(nn.Module):
    """Logits from a model that returns a tuple (an index), a dict (a key) or an object with .logits."""

    def __init__(self, inner: nn.Module, output: str = "logits") -> None:
        super().__init__()
        self.inner, self.output = inner, output

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        if isinstance(out, Tensor):
            return out
        if isinstance(out, (tuple, list)) and self.output.isdigit():
            return out[int(self.output)]
        if isinstance(out, dict) and self.output in out:
            return out[self.output]
        if hasattr(out, self.output):
            return getattr(out, self.output)
        raise AdvlabError(f"the model returned {type(out).__name__}; --output {self.output!r} selects nothing in it")


def load_model(spec: str, *, weights: str | Path | None = None, model_args: dict[str, Any] | None = None,
               normalize: tuple[Any, Any] | None = None, output: str | None = None) -> nn.Module:
    """A user's model ready for advlab: built from its spec, weights loaded, in eval mode; `normalize`
    = (mean, std) puts a Normalize layer in front so inputs stay in [0, 1]; `output` picks the logits
    of a model that returns a tuple, a dict or an object with .logits."""
    model = build_user_model(spec, model_args)
    if weights is not None:
        load_user_weights(model, weights)
    if output is not None:
        model = SelectOutput(model, output)
    if normalize is not None:
        model = nn.Sequential(Normalize(*normalize), model)
    return model.eval()
