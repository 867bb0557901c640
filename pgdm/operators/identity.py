"""Denoising: y = x (+ noise)."""
from __future__ import annotations

import torch

from .base import LinearOperator, as_batch_lam

__all__ = ["Identity"]


class Identity(LinearOperator):
    """H = I; with σ_y > 0 this is Gaussian denoising.

    Example:
        >>> Identity()(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    keyed_by_content = True
    decomposable = True
    family = "denoising"

    @property
    def spec(self) -> str:
        return "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return y

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        """(I + λI)⁻¹ v = v / (1 + λ)."""
        return v / (1 + as_batch_lam(lam, v))

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """U = V = I, s = 1."""
        return x

    V = U_adjoint = V_adjoint

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones((), dtype=x.dtype, device=x.device)
