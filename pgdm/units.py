"""The one conversion between the σ_y users give and the σ the sampler uses.

Every user-facing σ_y (Python API, command line, metrics.json, server) is a standard deviation on the paper's
[0, 1] pixel scale (Song et al. 2023 state σ_y = 0.05 that way). Images inside pgdm live in [-1, 1], which is
twice as wide, so the sampler's noise std is ``2 σ_y``.
"""
from __future__ import annotations

import torch

__all__ = ["MODEL_PER_PIXEL", "sigma_to_model", "sigma_to_pixel"]

MODEL_PER_PIXEL = 2.0  # [-1, 1] spans 2 units where [0, 1] spans 1


def sigma_to_model(sigma_y: float | torch.Tensor) -> float | torch.Tensor:
    """σ_y on the [0, 1] pixel scale → the std of the same noise on pgdm's [-1, 1] image scale."""
    return sigma_y * MODEL_PER_PIXEL


def sigma_to_pixel(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """The inverse of :func:`sigma_to_model`: a std on the [-1, 1] scale → σ_y on the [0, 1] pixel scale."""
    return sigma / MODEL_PER_PIXEL
