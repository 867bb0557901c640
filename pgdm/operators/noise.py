"""Additive Gaussian measurement noise, with its own generator."""
from __future__ import annotations

import torch
from torch import nn

from ..units import sigma_to_model

__all__ = ["GaussianNoise"]


class GaussianNoise(nn.Module):
    """y + 2σ_y·n, n ~ N(0, I): noise of std σ_y on the [0, 1] pixel scale added to y on the [-1, 1] scale.

    ``sigma``: a float or (B,) per-image σ_y, the unit ``Restorer.restore(sigma_y=...)`` and ``--sigma-y`` take.

    Example:
        >>> noisy = GaussianNoise(0.05, seed=0)(torch.zeros(2, 3, 8, 8))   # std 0.1 on [-1, 1]
    """

    def __init__(self, sigma: float | torch.Tensor, *, seed: int = 0) -> None:
        super().__init__()
        sigma = torch.as_tensor(sigma, dtype=torch.get_default_dtype())
        if not bool(((sigma >= 0) & sigma.isfinite()).all()):
            raise ValueError(f"noise std sigma_y must be finite and ≥ 0 (pixel scale [0, 1]), got {sigma.tolist()}")
        self.sigma_y = sigma  # pixel scale, as given
        self.register_buffer("sigma", sigma_to_model(sigma.reshape(-1, 1, 1, 1) if sigma.ndim else sigma))  # [-1, 1] scale
        self.seed = seed

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=y.device).manual_seed(self.seed)
        return y + self.sigma.to(y.dtype) * torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
