"""Denoising diffusion null-space models, DDNM and DDNM+ (Wang et al., ICLR 2023)."""
from __future__ import annotations

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, denoise, rows

__all__ = ["ddnm_coefficients", "ddnm_step", "ddnm_plus_step"]


def ddnm_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 1.0) -> dict[str, torch.Tensor]:
    """DDNM's per-step scalars, (N,) float64 (``t`` int64): t, alpha_t, alpha_s and, as DDNM's sampler writes
    them, c1 = η √(1 − ᾱ_s) (fresh noise) and c2 = √(1 − ᾱ_s) √(1 − η²) (the network's ε). η = 1: tuned with
    ``pgdm bench tune`` on Fashion-MNIST train images (DDNM's ImageNet-256 setting is 0.85, 0.2–0.6 dB lower there;
    docs/methods.md)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    acp = alphas_cumprod.to(torch.float64)
    alpha_t = acp[timesteps]
    alpha_s = torch.cat([acp[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    c1 = eta * (1 - alpha_s).sqrt()
    c2 = (1 - alpha_s).sqrt() * (1 - eta**2) ** 0.5
    return {"t": timesteps.to(torch.int64), "alpha_t": alpha_t, "alpha_s": alpha_s, "c1": c1, "c2": c2}


def _ddnm(denoiser, x, coef, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised, noisy_rule):
    x0, eps = denoise(denoiser, x, coef, class_labels, clip_denoised)
    a, c1 = coef["alpha_s"].sqrt(), coef["c1"]
    correction = op.project(x0) - y_pinv  # A†(Ax̂ − y) for linear A; h†(h(x̂)) − h†(y) in general
    if sigma_y2 is None or not noisy_rule:
        x0_hat, gamma = x0 - correction, c1
    else:
        # DDNM+ Eq. 17–19 with Σ_t = λ_t I: the y noise carried into x̂, a λ_t σ_y, must fit in the step's noise c1
        sy = rows(sigma_y2.sqrt(), x0)
        lam = torch.where(c1 >= a * sy, torch.ones_like(sy), c1 / (a * sy).clamp_min(torch.finfo(x0.dtype).tiny))
        gamma = (c1**2 - (a * lam * sy) ** 2).clamp_min(0).sqrt()
        x0_hat = x0 - lam * correction
    return a * x0_hat + gamma * noise + coef["c2"] * eps, x0_hat


def ddnm_step(
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
    """One DDNM update (Wang et al. 2023, Algorithm 1, Eq. 13): the range–null-space projection
    x̂' = A†y + (I − A†A)x̂ = x̂ − h†(h(x̂)) + h†(y), then x_s = √ᾱ_s x̂' + c1 ε + c2 ε_θ. No VJP.

    Measurement noise is passed through unchanged (DDNM proper); :func:`ddnm_plus_step` handles it. Returns
    (x_s, x̂'); noiseless linear h gives h(x̂') = y exactly. Arguments as :func:`pgdm.methods.pigdm.pigdm_step`.
    """
    return _ddnm(denoiser, x, coef, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised, noisy_rule=False)


def ddnm_plus_step(
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
    """One DDNM+ update for noisy y (Wang et al. 2023, Sec. 3.3, Eq. 17–19, Σ_t = λ_t I, Φ_t = γ_t² I):
    x̂' = x̂ − λ_t A†(Ax̂ − y) and x_s = √ᾱ_s x̂' + γ_t ε + c2 ε_θ, with λ_t = 1, γ_t = √(c1² − ᾱ_s σ_y²) while the
    step's noise c1 exceeds √ᾱ_s σ_y, else λ_t = c1/(√ᾱ_s σ_y), γ_t = 0 (per image). Without noise it is DDNM.
    The time-travel trick is not used. Arguments as :func:`pgdm.methods.pigdm.pigdm_step`."""
    return _ddnm(denoiser, x, coef, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised, noisy_rule=True)
