"""Denoising diffusion restoration models (Kawar et al., NeurIPS 2022), in the operator's own SVD."""
from __future__ import annotations

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, denoise, rows

__all__ = ["ddrm_coefficients", "ddrm_step"]


def ddrm_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 1.0, eta_b: float = 1.0) -> dict[str, torch.Tensor]:
    """DDRM's per-step scalars, (N,) float64 (``t`` int64): t, alpha_t, alpha_s, the VE noise levels
    sigma_t = √((1 − ᾱ_t)/ᾱ_t) and sigma_s (0 at the last step), and the constants eta, eta_b (η and η_b of
    Eq. 7–8). η = 1, η_b = 1: η tuned with ``pgdm bench tune`` on Fashion-MNIST train images (DDRM's ImageNet-256
    setting, η = 0.85, is 0.2–1.1 dB lower there; docs/methods.md)."""
    for name, v in (("eta", eta), ("eta_b", eta_b)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    acp = alphas_cumprod.to(torch.float64)
    alpha_t = acp[timesteps]
    alpha_s = torch.cat([acp[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    full = lambda v: torch.full_like(alpha_t, float(v))  # noqa: E731
    return {
        "t": timesteps.to(torch.int64),
        "alpha_t": alpha_t,
        "alpha_s": alpha_s,
        "sigma_t": ((1 - alpha_t) / alpha_t).sqrt(),
        "sigma_s": ((1 - alpha_s) / alpha_s).sqrt(),
        "eta": full(eta),
        "eta_b": full(eta_b),
    }


def ddrm_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    coef: Coefficients,
    y: torch.Tensor,
    y_pinv: torch.Tensor,
    op: Operator,
    noise: torch.Tensor,
    *,
    sigma_y2: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDRM update (Kawar et al. 2022, Eq. 7–8) in the spectral space of H = U diag(s) Vᵀ. No VJP.

    With VE quantities x̄_t = Vᵀx_t/√ᾱ_t, x̄_0 = Vᵀx̂, ȳ = Uᵀy/s, σ̄_y = σ_y/s and ε̄ = Vᵀε, per component:
      s = 0 (and the null space of H):  x̄_0 + √(1−η²) σ_s (x̄_t − x̄_0)/σ_t + η σ_s ε̄;
      σ_s < σ̄_y:                        x̄_0 + √(1−η²) σ_s (ȳ − x̄_0)/σ̄_y + η σ_s ε̄;
      σ_s ≥ σ̄_y:                        (1 − η_b) x̄_0 + η_b ȳ + √(σ_s² − η_b² σ̄_y²) ε̄;
    then x_s = √ᾱ_s V x̄_s. The last step (σ_s = 0, η_b = 1) sets Hx = y exactly for noiseless y.
    Needs ``op.decomposable``; arguments and result as :func:`pgdm.methods.pigdm.pigdm_step`.
    """
    x0, _ = denoise(denoiser, x, coef, class_labels, clip_denoised)
    sigma_t, sigma_s, eta, eta_b = coef["sigma_t"], coef["sigma_s"], coef["eta"], coef["eta_b"]
    keep = (1 - eta**2).sqrt()
    x_ve = x / coef["alpha_t"].sqrt()
    unobserved = x0 + keep * sigma_s * (x_ve - x0) / sigma_t + eta * sigma_s * noise  # DDIM, for the null space
    z0, zt, zn = op.V_adjoint(x0), op.V_adjoint(x_ve), op.V_adjoint(noise)
    s = op.singular_values(x0)
    observed = s > 0
    tiny = torch.finfo(x0.dtype).tiny
    y_bar = op.U_adjoint(y) / torch.where(observed, s, torch.ones_like(s))
    sy = torch.zeros((), dtype=x0.dtype, device=x0.device) if sigma_y2 is None else rows(sigma_y2.sqrt(), x0)
    sy_bar = sy / torch.where(observed, s, torch.ones_like(s))
    z_unobs = z0 + keep * sigma_s * (zt - z0) / sigma_t + eta * sigma_s * zn
    z_low = z0 + keep * sigma_s * (y_bar - z0) / sy_bar.clamp_min(tiny) + eta * sigma_s * zn
    z_high = (1 - eta_b) * z0 + eta_b * y_bar + (sigma_s**2 - eta_b**2 * sy_bar**2).clamp_min(0).sqrt() * zn
    z = torch.where(observed, torch.where(sigma_s < sy_bar, z_low, z_high), z_unobs)
    x_next = op.V(z) + unobserved - op.V(op.V_adjoint(unobserved))
    return coef["alpha_s"].sqrt() * x_next, x0
