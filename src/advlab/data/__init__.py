"""Datasets in their natural bounds, with checksummed sources and standard file formats."""
from .datasets import (DATASETS, load_cifar10, load_dataset, load_digits, load_fashion_mnist, orthogonal_data,
                       uniform_noise_images)
from .arrays import load_arrays, load_data_spec
from .formats import parse_idx, read_cifar10_dir, read_idx
from .mnist import ArrayDataset, fetch_mnist, load_mnist
from .sources import cache_dir

__all__ = ["ArrayDataset", "fetch_mnist", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_digits",
           "load_dataset", "orthogonal_data", "uniform_noise_images", "DATASETS", "cache_dir", "parse_idx",
           "read_idx", "read_cifar10_dir", "load_arrays", "load_data_spec", "load"]

load = load_data_spec  # advlab.data.load(spec): a dataset name or FILE.npz / FILE.safetensors
