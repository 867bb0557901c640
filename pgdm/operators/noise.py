"""Additive Gaussian measurement noise, with its own generator."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["GaussianNoise"]


class GaussianNoise(nn.Module):
    """y + σ_y·n, n ~ N(0, I). ``sigma``: a float or (B,) per-image std in model units ([-1, 1] scale).

    Example:
        >>> noisy = GaussianNoise(0.1, seed=0)(torch.zeros(2, 3, 8, 8))
    """

    def __init__(self, sigma: float | torch.Tensor, *, seed: int = 0) -> None:
        super().__init__()
        sigma = torch.as_tensor(sigma, dtype=torch.get_default_dtype())
        if (sigma < 0).any():
            raise ValueError(f"noise std must be ≥ 0, got {sigma.tolist()}")
        self.register_buffer("sigma", sigma.reshape(-1, 1, 1, 1) if sigma.ndim else sigma)
        self.seed = seed

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=y.device).manual_seed(self.seed)
        return y + self.sigma.to(y.dtype) * torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
