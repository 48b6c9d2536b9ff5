"""advlab's exception types: every bad input raises one of these with a message naming the problem.

`exit_code` is what the CLI exits with: 2 for a bad command line, experiment file or setting (usage),
1 for a runtime failure (a broken model, a corrupt file, a busy run directory)."""
from __future__ import annotations


class AdvlabError(ValueError):
    """Base class of all errors advlab raises for bad input or bad state."""

    exit_code = 1


class ThreatModelError(AdvlabError):
    """An invalid threat model: unknown norm, negative or non-finite eps, bad bounds."""

    exit_code = 2


class InputError(AdvlabError):
    """Invalid attack or evaluation inputs: shape, dtype, bounds, NaN/inf, labels."""


class ModelOutputError(AdvlabError):
    """The model returned something that is not a (N, C) tensor of finite logits."""


class AttackConfigError(AdvlabError):
    """An attack was configured with invalid hyper-parameters."""

    exit_code = 2


class DataError(AdvlabError):
    """A data file is missing, corrupt, fails its checksum, or holds unexpected content."""


class CheckpointError(AdvlabError):
    """A checkpoint or state file is corrupt, untrusted, or does not match what was expected."""


class DeviceError(AdvlabError):
    """An unknown device name, or a device this machine does not have (e.g. cuda without CUDA)."""

    exit_code = 2


class RunDirError(AdvlabError):
    """A run directory that is not one (no run in it), or one that already holds a run and was
    given without --resume / --restart."""

    exit_code = 2


class RunLockedError(AdvlabError):
    """Another process is writing the same run directory."""
