"""Worst-case robustness evaluation, sanity checks and metrics."""
from .autoattack import AttackStats, RobustnessResult, evaluate_robustness, robust_accuracy_curve
from .checks import GradientMaskingWarning
from .metrics import accuracy, accuracy_vs_eps, mean_confidence, predict
from .suites import SUITES, build_suite

__all__ = ["evaluate_robustness", "robust_accuracy_curve", "RobustnessResult", "AttackStats",
           "GradientMaskingWarning", "accuracy", "accuracy_vs_eps", "mean_confidence", "predict",
           "SUITES", "build_suite"]
