"""Training: one trainer, pluggable objectives, stateless schedules, safetensors checkpoints."""
from .basic import train_classifier
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .objectives import (FGSMRS, OBJECTIVES, PGDAT, TRADES, FGSMMixture, FreeAT, NoiseMixture, Objective,
                         Standard, StepContext, build_objective)
from .schedules import lr_at, momentum_at
from .trainer import Trainer, TrainConfig, TrainResult

__all__ = ["train_classifier", "Trainer", "TrainConfig", "TrainResult", "Objective", "StepContext", "Standard",
           "FGSMMixture", "NoiseMixture", "PGDAT", "TRADES", "FGSMRS", "FreeAT", "OBJECTIVES", "build_objective",
           "lr_at", "momentum_at", "save_checkpoint", "load_checkpoint", "load_weights"]
