"""advlab's exception types: every bad input raises one of these with a message naming the problem."""
from __future__ import annotations


class AdvlabError(ValueError):
    """Base class of all errors advlab raises for bad input or bad state."""


class ThreatModelError(AdvlabError):
    """An invalid threat model: unknown norm, negative or non-finite eps, bad bounds."""


class InputError(AdvlabError):
    """Invalid attack or evaluation inputs: shape, dtype, bounds, NaN/inf, labels."""


class ModelOutputError(AdvlabError):
    """The model returned something that is not a (N, C) tensor of finite logits."""


class AttackConfigError(AdvlabError):
    """An attack was configured with invalid hyper-parameters."""


class DataError(AdvlabError):
    """A data file is missing, corrupt, fails its checksum, or holds unexpected content."""


class CheckpointError(AdvlabError):
    """A checkpoint or state file is corrupt, untrusted, or does not match what was expected."""
