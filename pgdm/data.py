"""Bundled demo images (:func:`demo_image`), and Fashion-MNIST from Debian's ``dataset-fashion-mnist`` for training
the default model."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = ["DEMO_DIR", "FASHION_MNIST_DIR", "demo_image", "demo_images", "load_fashion_mnist", "to_model_range"]

DEMO_DIR = Path(__file__).parent / "assets" / "demo"  # installed with the package
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}


def demo_images() -> list[Path]:
    """The ten bundled 32×32 grayscale Fashion-MNIST test images (one per class, ``0_tshirt.png`` … ``9_boot.png``),
    paths inside the installed package, in class order."""
    return sorted(DEMO_DIR.glob("*.png"))


def demo_image(name: str | int) -> Path:
    """The path of one bundled demo image, by class index (``3``), name (``"dress"``, ``"3_dress"``) or file name.

    Example:
        >>> x = pgdm.io.read_image(pgdm.data.demo_image("dress"), channels=1)   # (1, 1, 32, 32) in [-1, 1]
    """
    images = demo_images()
    key = str(name).strip().lower().removesuffix(".png")
    for path in images:
        index, _, label = path.stem.partition("_")
        if key in (path.stem, index, label):
            return path
    names = ", ".join(p.stem.partition("_")[2] for p in images)
    raise ValueError(f"no bundled demo image {name!r}; expected a class index 0–{len(images) - 1} or one of {names}")


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
        raise ValueError(f"size {size} is smaller than the {rows}×{cols} images")
    top, left = (size - rows) // 2, (size - cols) // 2
    out = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    out[..., top : top + rows, left : left + cols] = images
    return out


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1]."""
    return images.float() / 127.5 - 1.0
