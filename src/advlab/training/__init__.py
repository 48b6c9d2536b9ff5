"""Training: a plain supervised loop for now (robust objectives build on it)."""
from .basic import train_classifier

__all__ = ["train_classifier"]
