"""Experiment files (TOML), the runner, and run directories."""
from .runner import build_attack, evaluate, load_run_model, run_experiment
from .spec import ExperimentError, ExperimentSpec, load_spec, parse_spec
from .store import RunDir, environment, list_runs

__all__ = ["ExperimentSpec", "ExperimentError", "load_spec", "parse_spec", "run_experiment", "evaluate",
           "build_attack", "load_run_model", "RunDir", "list_runs", "environment"]
