"""Datasets in their natural bounds, with checksummed sources."""
from .mnist import ArrayDataset, fetch_mnist, load_mnist
from .sources import cache_dir

__all__ = ["ArrayDataset", "fetch_mnist", "load_mnist", "cache_dir"]
