"""Checking a measurement against the image size a model restores, before h† is applied."""
from __future__ import annotations

import torch

from .base import Operator

__all__ = ["check_measurement_fits"]


def check_measurement_fits(op: Operator, y: torch.Tensor, image_shape: tuple[int, int, int]) -> None:
    """Raise a one-line ValueError unless y: (B, …) has the shape ``op`` gives images of ``image_shape`` (C, H, W).

    An operator not built for a size (``SuperResolution(4)``) takes any measurement, and h† of a wrongly
    sized one is an image of another size; this names the sizes the user can act on instead. Host-side: it
    runs h once on a zero batch like y, outside the sampling loop.
    """
    c, h, w = image_shape
    expected = tuple(op(torch.zeros(y.shape[0], c, h, w, dtype=y.dtype, device=y.device)).shape)
    if tuple(y.shape) != expected:
        raise ValueError(
            f"{op.spec}: the measurement has shape {tuple(y.shape)}, but the model's {h}×{w} images give "
            f"measurements of shape {expected}"
        )
