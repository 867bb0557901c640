"""Colorization: y = mean over colour channels."""
from __future__ import annotations

import torch

from .base import LinearOperator, as_batch_lam

__all__ = ["Colorize"]


class Colorize(LinearOperator):
    """y = (1/C) Σ_c x_c: (B, C, H, W) → (B, 1, H, W).

    HHᵀ = (1/C) I, so Hᵀ(HHᵀ + λI)⁻¹ v = (v/C)/(1/C + λ) copied to every channel, and H† repeats y.

    Example:
        >>> Colorize()(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """

    keyed_by_content = True
    family = "colorization"
    decomposable = True

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"colorization needs a colour image (channels ≥ 2), got channels={channels}")
        self.channels = channels

    @property
    def spec(self) -> str:
        return "colorize"

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"colorize: expected (B, {self.channels}, H, W) colour images, got {tuple(x.shape)}")

    def check_measurement(self, y: torch.Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != 1:
            raise ValueError(f"colorize: expected a (B, 1, H, W) grayscale measurement, got {tuple(y.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x.mean(dim=1, keepdim=True)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return (y / self.channels).expand(-1, self.channels, -1, -1).contiguous()

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return y.expand(-1, self.channels, -1, -1).contiguous()

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        return self.pinv(v / (1 + self.channels * as_batch_lam(lam, v)))

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """Per pixel H = (1/C) 1ᵀ = U s Vᵀ with U = 1, s = 1/√C, V = 1/√C: (B, C, H, W) → (B, 1, H, W)."""
        return x.sum(dim=1, keepdim=True) / self.channels**0.5

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return (z / self.channels**0.5).expand(-1, self.channels, -1, -1).contiguous()

    def U_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((), self.channels**-0.5, dtype=x.dtype, device=x.device)
