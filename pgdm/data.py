"""Bundled demo images (:func:`demo_image`), and training data: Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (the default model) and random crops of the colour photos shipped with scikit-image and
scikit-learn (the photo model)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DEMO_DIR", "FASHION_MNIST_DIR", "PHOTO_TRAIN", "PHOTO_HELD_OUT", "PhotoCrops", "demo_image", "demo_images", "downscale",
    "held_out_crops", "load_fashion_mnist", "load_fashion_mnist_labels", "load_photo", "to_model_range",
]  # fmt: skip

DEMO_DIR = Path(__file__).parent / "assets" / "demo"  # installed with the package
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
_LABEL_FILES = {"train": "train-labels-idx1-ubyte.gz", "test": "t10k-labels-idx1-ubyte.gz"}


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
    raw = _read_idx(root, _FILES, split)
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError(f"{root}/{_FILES[split]} is not an IDX image file (magic {magic}, expected 2051)")
    images = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols).copy())
    if size < max(rows, cols):
        raise ValueError(f"size {size} is smaller than the {rows}×{cols} images")
    top, left = (size - rows) // 2, (size - cols) // 2
    out = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    out[..., top : top + rows, left : left + cols] = images
    return out


def load_fashion_mnist_labels(root: str | Path = FASHION_MNIST_DIR, split: str = "train") -> torch.Tensor:
    """Fashion-MNIST class labels as (N,) int64 in 0–9, in the order of :func:`load_fashion_mnist`'s images."""
    raw = _read_idx(root, _LABEL_FILES, split)
    magic, n = np.frombuffer(raw[:8], dtype=">i4")
    if magic != 2049:
        raise ValueError(f"{root}/{_LABEL_FILES[split]} is not an IDX label file (magic {magic}, expected 2049)")
    return torch.from_numpy(np.frombuffer(raw[8:], dtype=np.uint8)[:n].astype(np.int64))


def _read_idx(root: str | Path, files: dict[str, str], split: str) -> bytes:
    if split not in files:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(root) / files[split]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; install it with `apt-get install dataset-fashion-mnist` or pass --data DIR")
    with gzip.open(path, "rb") as f:
        return f.read()


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1]."""
    return images.float() / 127.5 - 1.0


# Colour photos shipped inside scikit-image (``skimage.data``) and scikit-learn
# (``sklearn.datasets.load_sample_images``). The photo model trains on PHOTO_TRAIN; PHOTO_HELD_OUT is kept
# out of training for evaluation (benchmarks/eval_photo.py, ``pgdm demo --photos``).
PHOTO_TRAIN = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "motorcycle", "china")
PHOTO_HELD_OUT = ("chelsea", "flower")
_SKLEARN_PHOTOS = {"china": "china.jpg", "flower": "flower.jpg"}


def load_photo(name: str) -> torch.Tensor:
    """One bundled colour photo as (3, H, W) uint8, e.g. ``load_photo("chelsea")`` is (3, 300, 451).

    ``name``: one of :data:`PHOTO_TRAIN` or :data:`PHOTO_HELD_OUT` (``motorcycle`` is the left view of
    ``skimage.data.stereo_motorcycle``). Needs scikit-image, and scikit-learn for china and flower.
    """
    if name not in PHOTO_TRAIN + PHOTO_HELD_OUT:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTO_TRAIN + PHOTO_HELD_OUT)}")
    try:
        if name in _SKLEARN_PHOTOS:
            from sklearn.datasets import load_sample_image

            arr = load_sample_image(_SKLEARN_PHOTOS[name])
        else:
            import skimage.data

            arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    except ImportError as e:
        raise ImportError(f"photo {name!r} ships with {e.name}; install scikit-image and scikit-learn (pip install 'pgdm[dev]')") from None
    return torch.from_numpy(np.array(arr[..., :3])).permute(2, 0, 1).contiguous()


def downscale(image: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) uint8 → (3, round(H/factor), round(W/factor)) uint8 by Pillow's antialiased bicubic."""
    from PIL import Image

    h, w = (max(1, round(s / factor)) for s in image.shape[1:])
    im = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((w, h), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


class PhotoCrops:
    """Random square crops of colour photos at several scales, with flips and 90° rotations.

    Each photo is downscaled once by ``scales`` factors (log-spaced from 1 to ``max_downscale``); a crop picks a
    photo, then a scale, uniformly, then a uniform position, a horizontal flip (p = 1/2) and a rotation by
    k·90°, k uniform in 0..3. Scales at which the photo is smaller than ``size`` are skipped.
    """

    def __init__(self, names: tuple[str, ...] = PHOTO_TRAIN, size: int = 32, max_downscale: float = 4.0, scales: int = 7):
        self.size = size
        factors = np.geomspace(1.0, max_downscale, scales) if scales > 1 else np.ones(1)
        self.levels: list[list[torch.Tensor]] = []
        for name in names:
            photo = load_photo(name)
            levels = [photo if f == 1.0 else downscale(photo, float(f)) for f in factors]
            levels = [im for im in levels if min(im.shape[1:]) >= size]
            if not levels:
                raise ValueError(f"photo {name!r} {tuple(photo.shape[1:])} is smaller than the {size}×{size} crop")
            self.levels.append(levels)

    def sample(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """(batch, 3, size, size) float32 in [-1, 1], drawn with ``gen``."""
        s = self.size
        u = torch.rand(batch, 4, generator=gen, dtype=torch.float64)
        flip = torch.rand(batch, generator=gen) < 0.5
        rot = torch.randint(0, 4, (batch,), generator=gen)
        crops = []
        for (up, us, uy, ux) in u.tolist():
            levels = self.levels[int(up * len(self.levels))]
            im = levels[int(us * len(levels))]
            top, left = int(uy * (im.shape[1] - s + 1)), int(ux * (im.shape[2] - s + 1))
            crops.append(im[:, top : top + s, left : left + s])
        x = to_model_range(torch.stack(crops))  # (B, 3, s, s)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        for k in (1, 2, 3):
            sel = rot == k
            x[sel] = x[sel].rot90(k, (-2, -1))
        return x


def held_out_crops(size: int = 32, per_photo: int = 8, seed: int = 0) -> torch.Tensor:
    """(len(PHOTO_HELD_OUT)·per_photo, 3, size, size) uint8: crops of the held-out photos at their own scale.

    Positions are uniform, drawn with ``seed``; photo by photo in :data:`PHOTO_HELD_OUT` order.
    """
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for name in PHOTO_HELD_OUT:
        photo = load_photo(name)
        for _ in range(per_photo):
            top = int(torch.randint(0, photo.shape[1] - size + 1, (), generator=gen))
            left = int(torch.randint(0, photo.shape[2] - size + 1, (), generator=gen))
            crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)
