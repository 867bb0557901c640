"""Arrays of other libraries in and out: any DLPack array (NumPy, CuPy, JAX, …) ↔ torch tensors.

``to_tensor`` imports with :func:`torch.from_dlpack`, which shares the caller's memory (no copy) when the
array is on the device the model runs on; only an array on another device is copied there. ``like`` hands a
tensor back as the caller's array type through that library's own ``from_dlpack`` (its array-API namespace),
again without a copy where the devices agree. :func:`accepts_arrays` applies both to a ``restore`` method,
so ``Restorer.restore`` and ``Engine.restore`` take a NumPy array and return NumPy arrays.

Example:
    >>> import numpy as np, pgdm
    >>> restorer = pgdm.Restorer(pgdm.load_model("default"), steps=10)
    >>> op = pgdm.ops.SuperResolution(4)
    >>> y = np.zeros((1, 1, 8, 8), np.float32)          # (B, C, H/4, W/4) in [-1, 1]
    >>> x = restorer.restore(y, op, seed=0)             # np.ndarray (1, 1, 32, 32) float32
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import torch

__all__ = ["is_dlpack_array", "is_image", "to_tensor", "like", "accepts_arrays", "pixels_to_model", "model_to_pixels"]

F = TypeVar("F", bound=Callable[..., Any])


def is_dlpack_array(a: Any) -> bool:
    """True for a non-torch object exporting DLPack (``__dlpack__`` and ``__dlpack_device__``)."""
    return not isinstance(a, torch.Tensor) and hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__")


def to_tensor(a: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch view of the DLPack array ``a`` (a tensor passes through), moved to ``device`` only if it is elsewhere.

    The view shares ``a``'s memory: writing to one writes to the other. Raises TypeError for objects
    without DLPack support.
    """
    if isinstance(a, torch.Tensor):
        t = a
    elif is_dlpack_array(a):
        t = torch.from_dlpack(a)
    else:
        raise TypeError(f"expected a torch tensor or a DLPack array (NumPy, CuPy, JAX, …), got {type(a).__name__}")
    return t if device is None or t.device == torch.device(device) else t.to(device)


def _namespace(a: Any):
    """The array library of ``a``: its array-API namespace, else its top-level module (NumPy < 2, CuPy < 13)."""
    if hasattr(a, "__array_namespace__"):
        return a.__array_namespace__()
    return sys.modules.get(type(a).__module__.partition(".")[0])


def like(t: torch.Tensor, a: Any) -> Any:
    """``t`` as an array of ``a``'s type, on ``a``'s device (a tensor ``a``: ``t`` itself).

    The result shares ``t``'s memory when ``t`` is already on ``a``'s device.
    """
    if isinstance(a, torch.Tensor):
        return t
    xp = _namespace(a)
    if xp is None or not hasattr(xp, "from_dlpack"):
        raise TypeError(f"cannot build a {type(a).__name__} from a tensor: its library has no from_dlpack")
    t = t.detach().to(torch.from_dlpack(a).device).contiguous()
    return xp.from_dlpack(t)


def accepts_arrays(method: F) -> F:
    """Let ``method(self, y, …)`` take any DLPack array as ``y`` and return results of ``y``'s type.

    ``y`` is viewed as a tensor and moved to the device of ``self.denoiser`` when it lives elsewhere; the
    result (a tensor or a tuple of tensors) comes back as ``y``'s array type on ``y``'s device. Torch
    tensors pass through untouched.
    """

    @functools.wraps(method)
    def wrapper(self, y, *args, **kwargs):
        if isinstance(y, torch.Tensor):
            return method(self, y, *args, **kwargs)
        device = self.denoiser.alphas_cumprod.device
        if is_image(y):  # a PIL image or a uint8 array: pixels in, pixels out (pgdm.io)
            out = method(self, pixels_to_model(y, self.denoiser.channels).to(device), *args, **kwargs)
            if isinstance(out, tuple):  # (mean, std): the std as float32 (B, H, W, C) on the 0..255 pixel scale
                return model_to_pixels(out[0], y), (out[1] * 127.5).permute(0, 2, 3, 1).cpu().numpy()
            return model_to_pixels(out, y)
        out = method(self, to_tensor(y, device), *args, **kwargs)
        return tuple(like(o, y) for o in out) if isinstance(out, tuple) else like(out, y)

    return wrapper  # type: ignore[return-value]


def is_image(a: Any) -> bool:
    """True for a PIL image or a uint8 NumPy array, which ``restore`` reads as pixels (0..255), not [-1, 1] values."""
    from PIL import Image

    return isinstance(a, Image.Image) or (type(a).__module__ == "numpy" and getattr(a, "dtype", None) == "uint8")


def pixels_to_model(a: Any, channels: int) -> torch.Tensor:
    """A PIL image or uint8 array (H, W), (H, W, C) or (B, H, W, C) → (B, C, H, W) float32 in [-1, 1]."""
    from .io import to_tensor as image_to_tensor

    return image_to_tensor(a, channels)


def model_to_pixels(x: torch.Tensor, like: Any) -> Any:
    """(B, C, H, W) in [-1, 1] → what ``like`` was: a PIL image (B = 1) or a list of them, or a uint8 array
    (B, H, W, C), or (H, W[, C]) when ``like`` had no batch axis."""
    import numpy as np

    from .io import to_pil, to_uint8

    if not isinstance(like, np.ndarray):
        images = to_pil(x)
        return images[0] if len(images) == 1 else images
    a = np.stack([to_uint8(row) for row in x])  # (B, H, W) or (B, H, W, C)
    if a.ndim == 3 and like.ndim in (3, 4) and like.shape[-1] == 1:
        a = a[..., None]
    return a if like.ndim == 4 else a[0]
