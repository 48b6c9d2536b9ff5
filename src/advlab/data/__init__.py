"""Datasets in their natural bounds, with checksummed sources and standard file formats."""
from .datasets import (DATASETS, load_cifar10, load_cifar100, load_dataset, load_digits, load_fashion_mnist,
                       orthogonal_data, uniform_noise_images)
from .arrays import load_arrays, load_data_spec, load_image_folder
from .formats import parse_idx, read_cifar10_dir, read_cifar100_dir, read_idx, read_image_folder
from .mnist import ArrayDataset, fetch_mnist, load_mnist
from .sources import cache_dir

__all__ = ["ArrayDataset", "fetch_mnist", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_cifar100",
           "load_digits",
           "load_dataset", "orthogonal_data", "uniform_noise_images", "DATASETS", "cache_dir", "parse_idx",
           "read_idx", "read_cifar10_dir", "read_cifar100_dir", "read_image_folder",
           "load_image_folder", "load_arrays", "load_data_spec", "load"]

load = load_data_spec  # advlab.data.load(spec): a dataset name, FILE.npz / FILE.safetensors, or an image folder
