"""Image files ↔ tensors: reading degraded inputs, writing outputs atomically, resizing and cropping."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "read_image", "write_image", "list_images", "fit_size", "to_uint8"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """Read an image file as (1, channels, H, W) float32 in [-1, 1] (converted to grayscale or RGB).

    Raises ValueError naming the file when it is missing, unreadable or corrupt.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t[None].float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W) or (H, W, C) uint8 array, rounding half up as ``pgdm.ops.JPEG`` does."""
    a = torch.floor(x.detach().double().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def write_image(x: torch.Tensor, path: str | Path, **save_options) -> Path:
    """Write (C, H, W) in [-1, 1] as an 8-bit PNG (or any Pillow format by suffix), atomically.

    ``save_options`` go to ``PIL.Image.save`` (e.g. ``qtables=``/``subsampling=`` for JPEG).
    The image goes to a temporary file in the same folder and is renamed into place, so an interrupted
    run never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(to_uint8(x)).save(tmp, **save_options)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and directories (non-recursive, sorted) into image files."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")))
        else:
            files.append(item)
    return files


def fit_size(x: torch.Tensor, size: tuple[int, int], mode: str | None) -> torch.Tensor:
    """Make (B, C, H, W) exactly ``size`` = (H', W'): ``"resize"`` (bicubic, anti-aliased), ``"crop"`` (centre)
    or None (the size must already match; a ValueError suggests --resize / --crop)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if mode == "resize":
        return torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    if mode == "crop":
        if h < size[0] or w < size[1]:
            raise ValueError(f"cannot crop a {h}x{w} image to {size[0]}x{size[1]}; use --resize")
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
        return x[..., top : top + size[0], left : left + size[1]]
    raise ValueError(f"image is {h}x{w} but {size[0]}x{size[1]} is needed; pass --resize or --crop")
