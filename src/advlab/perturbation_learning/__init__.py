"""Learning from adversarial perturbations (Ilyas et al. 2019; Kumano et al. 2024): dataset
builders, training on mislabeled adversarial examples with controls, and the synthetic theory check."""
from .builders import (PAPER_BUDGETS, SCENARIO_LABELS, SCENARIOS, LabelMap, PerturbationBudget, PerturbationDataset,
                       any_labels, build_perturbation_dataset, next_labels, paper_budget, random_other_labels,
                       state_sha256, store_perturbed)
from .learning import LearningResult, noise_control, train_and_test, unperturbed_control
from .synthetic import SyntheticConfig, run_synthetic, synthetic_sweep, theory_prediction, train_exponential

__all__ = ["PAPER_BUDGETS", "SCENARIO_LABELS", "SCENARIOS", "LabelMap", "PerturbationBudget", "PerturbationDataset",
           "any_labels", "build_perturbation_dataset", "next_labels", "paper_budget", "random_other_labels",
           "state_sha256", "store_perturbed", "LearningResult", "noise_control", "train_and_test",
           "unperturbed_control", "SyntheticConfig", "run_synthetic", "synthetic_sweep", "theory_prediction",
           "train_exponential"]
