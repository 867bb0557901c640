"""Image files and arrays ↔ tensors: reading inputs, writing outputs atomically, resizing and cropping.

Tensors are (B, C, H, W) or (C, H, W) in [-1, 1]; arrays are uint8 (H, W) or (H, W, C); 16-bit PNGs are
scaled to the same range, never clipped. Every write goes to a temporary file in the target folder,
is flushed to disk and renamed into place, and gets the usual permissions from the umask (0644 under
umask 022), so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # one limit for every image file read (PNG, JPEG, …): Pillow's default decompression-bomb limit

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "ImageTooLarge",
    "open_image_checked",
    "ImageLike",
    "read_image",
    "is_colour",
    "pixels_to_tensor",
    "write_image",
    "write_bytes_atomic",
    "write_json_atomic",
    "remove_stale_temporaries",
    "list_images",
    "fit_size",
    "to_uint8",
    "to_tensor",
    "to_pil",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
ImageLike = Union[torch.Tensor, np.ndarray, Image.Image]


def _pixels(im: Image.Image) -> tuple[np.ndarray, float]:
    """(array, full-scale value) of a Pillow image: uint8 for 8-bit modes, uint16/int32 for 16-bit ones."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float64), 65535.0
    if im.mode == "I":  # 32-bit integer images (16-bit TIFFs, older Pillows' 16-bit PNGs): 16-bit samples
        a = np.asarray(im).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError("32-bit integer samples outside 0..65535 are not supported (8- or 16-bit images only)")
        return a, 65535.0
    if im.mode == "F":
        raise ValueError("floating-point images are not supported (8- or 16-bit integer images only)")
    return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im, dtype=np.uint8), 255.0


def _is_gray(a: np.ndarray) -> bool:
    return a.ndim == 2 or bool((a == a[..., :1]).all())


def read_image(path: str | Path, channels: int, *, to_gray: bool = False, notes: list[str] | None = None) -> torch.Tensor:
    """Read an image file as (1, channels, H, W) float32 in [-1, 1].

    A grayscale file read for ``channels == 3`` has its channel repeated; an RGB file whose channels are
    equal reads as grayscale. A colour file read for ``channels == 1`` is refused unless ``to_gray`` (then it
    is converted with ITU-R 601 luma, as Pillow's "L" mode, and a note is appended to ``notes``).
    Transparency is dropped. Raises ValueError naming the file when it is missing, unreadable, corrupt or
    larger than :data:`MAX_PIXELS`, which is checked from the header before anything is decoded.
    """
    path = Path(path)
    try:
        with open_image_checked(path, str(path)) as im:
            if im.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1"):
                im = im.convert("L" if im.mode in ("LA", "1") else "RGB")
            arr, full = _pixels(im)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    if arr.ndim == 3 and _is_gray(arr):
        arr = arr[..., 0]
    if arr.ndim == 3 and channels == 1:
        if not to_gray:
            raise ValueError(
                f"{path}: a colour image, but this model restores grayscale images; pass --gray to convert it or use a colour "
                "model (--model photo)"
            )
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        if notes is not None:
            notes.append(f"{path}: colour converted to grayscale for this 1-channel model")
    return pixels_to_tensor(arr, channels, full)


def is_colour(path: str | Path) -> bool:
    """Whether ``path`` reads as a colour image with :func:`read_image` (RGB with channels that differ).

    An unreadable file answers False (reading it later reports the problem).
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                return False
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return not _is_gray(arr)


def open_image_checked(source, name: str, max_pixels: int | None = None) -> Image.Image:
    """``Image.open(source)`` (a path or a binary file object) after its header's size is checked: a ValueError
    naming ``name`` for an image over ``max_pixels``, before any pixel is decoded and without Pillow's
    DecompressionBombWarning (``max_pixels`` None: :data:`MAX_PIXELS`). The image is opened lazily, as Pillow does;
    use it in a ``with`` block."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below, against one limit
        try:
            im = Image.open(source)
        except Image.DecompressionBombError as err:  # over twice Pillow's limit: Pillow refuses it from the header
            claimed = re.search(r"\((\d+) pixels\)", str(err))
            limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
            size = f"{claimed[1]} pixels is" if claimed else "the image is"
            raise ImageTooLarge(f"{name}: {size} over the limit of {limit} pixels") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageTooLarge(f"{name}: {h}×{w} = {w * h} pixels is over the limit of {max_pixels}")
    return im


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than the limit (refused before decoding)."""


def pixels_to_tensor(arr: np.ndarray, channels: int, full: float = 255.0) -> torch.Tensor:
    """Samples (H, W) or (H, W, C) in [0, full] → (1, channels, H, W) float32 in [-1, 1], scaled in float64
    (the conversion every image file goes through, so arrays and files give the same tensor)."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    t = t[None].expand(channels, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)
    return (t[None] * (2.0 / full) - 1.0).float().contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W) or (H, W, C) uint8 array, rounding half up as ``pgdm.ops.JPEG`` does."""
    a = torch.floor(x.detach().double().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def to_tensor(image: ImageLike, channels: int | None = None) -> torch.Tensor:
    """A PIL image, a uint8 array (H, W) / (H, W, C) / (B, H, W, C), or a tensor → (B, C, H, W) float32 in [-1, 1].

    Tensors pass through unchanged (they are taken to be in [-1, 1] already). ``channels`` (1 or 3) converts
    PIL images and arrays to grayscale or RGB as :func:`read_image` does (colour → gray only on request).
    """
    if isinstance(image, torch.Tensor):
        return image
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L" if channels == 1 else "RGB") if channels or image.mode not in ("L", "RGB") else image)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = f"{type(image).__name__} of dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"expected a PIL image, a uint8 array (H, W[, C]) or a [-1, 1] tensor, got {got}")
    a = torch.from_numpy(np.array(image))  # a copy: the caller's array stays theirs
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"a uint8 image array must be (H, W), (H, W, C) or (B, H, W, C) with C = 1 or 3, got {tuple(image.shape)}")
    t = a.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if channels == 3 and t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    elif channels == 1 and t.shape[1] == 3:
        t = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return t.contiguous()


def to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """(C, H, W) in [-1, 1] → a PIL image ("L" or "RGB"); (B, C, H, W) → a list of them."""
    if x.ndim == 4:
        return [Image.fromarray(to_uint8(row)) for row in x]
    return Image.fromarray(to_uint8(x))


def temporary_tag(host: str | None = None, pid: int | None = None) -> str:
    """``host-pid`` of the writer, part of every temporary file's name (see :func:`remove_stale_temporaries`)."""
    return f"{host or socket.gethostname()}-{os.getpid() if pid is None else pid}"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files left in ``folder`` by writers on this host that no longer run (a kill -9).

    Returns the files removed. Temporaries of live processes, and of other hosts, are left alone.
    """
    host, removed = socket.gethostname(), []
    pattern = re.compile(rf"\.{re.escape(host)}-(\d+)\.[0-9a-f]{{8}}\.tmp$")  # .{name}.{host}-{pid}.{random}.tmp
    for tmp in Path(folder).glob(".*.tmp"):
        match = pattern.search(tmp.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:  # alive, another user's
            pass
    return removed


def write_bytes_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically and durably: ``write(tmp)`` fills a temporary file beside it, which is fsynced and
    renamed, and the folder is fsynced.

    The file gets mode 0666 less the umask, as ``open()`` gives; on any failure the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{temporary_tag()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself on disk: the file is durably in place
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def write_json_atomic(obj, path: str | Path) -> Path:
    """Write ``obj`` as strict JSON (NaN/Inf refused) atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text + "\n")

    return write_bytes_atomic(path, write)


def write_image(x: torch.Tensor, path: str | Path, **save_options) -> Path:
    """Write (C, H, W) in [-1, 1] as an 8-bit PNG (or any Pillow format by suffix), atomically.

    ``save_options`` go to ``PIL.Image.save`` (e.g. ``qtables=``/``subsampling=`` for JPEG). The folder must exist.
    """
    path = Path(path)
    image = Image.fromarray(to_uint8(x))
    fmt = save_options.pop("format", None) or Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return write_bytes_atomic(path, lambda tmp: image.save(tmp, format=fmt, **save_options))


def list_images(inputs: list[str | Path], notes: list[str] | None = None) -> list[Path]:
    """Expand files and directories (non-recursive, sorted) into image files; a folder with none is an error.

    A file given more than once (the same path, or a folder and a file in it) is listed once, where it first
    appears; each repeat is described in ``notes`` when given.
    """
    files: list[Path] = []
    seen: dict[Path, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise ValueError(f"{item}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        else:
            found = [item]
        for path in found:
            first = seen.setdefault(path.resolve(), path)
            if first is path:
                files.append(path)
            elif notes is not None:
                notes.append(f"{path} is given more than once (as {first}); it is processed once")
    return files


def fit_size(x: torch.Tensor, size: tuple[int, int], mode: str | None, name: str = "image") -> torch.Tensor:
    """Make (B, C, H, W) exactly ``size`` = (H', W'): ``"resize"`` (bicubic, anti-aliased), ``"crop"`` (centre)
    or None (the size must already match; the ValueError names ``name`` and suggests --resize / --crop)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if mode == "resize":
        return torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    if mode == "crop":
        if h < size[0] or w < size[1]:
            raise ValueError(f"{name}: cannot crop a {h}×{w} image to {size[0]}×{size[1]}; use --resize")
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
        return x[..., top : top + size[0], left : left + size[1]]
    raise ValueError(f"{name}: image is {h}×{w} but {size[0]}×{size[1]} is needed; pass --resize or --crop")
