"""Datasets for training the default model: Fashion-MNIST from Debian's ``dataset-fashion-mnist``."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = ["FASHION_MNIST_DIR", "load_fashion_mnist", "to_model_range"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}


def load_fashion_mnist(root: str | Path = FASHION_MNIST_DIR, split: str = "train", size: int = 32) -> torch.Tensor:
    """Fashion-MNIST images as (N, 1, size, size) uint8, the 28×28 digits padded with black to ``size``.

    ``split``: "train" (60 000 images) or "test" (10 000). Reads the IDX files of the Debian package
    ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(root) / _FILES[split]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; install it with `apt-get install dataset-fashion-mnist` or pass --data DIR")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError(f"{path} is not an IDX image file (magic {magic}, expected 2051)")
    images = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols).copy())
    if size < max(rows, cols):
        raise ValueError(f"size {size} is smaller than the {rows}x{cols} images")
    top, left = (size - rows) // 2, (size - cols) // 2
    out = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    out[..., top : top + rows, left : left + cols] = images
    return out


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1]."""
    return images.float() / 127.5 - 1.0
