"""ΠGDM (Song et al., ICLR 2023, Algorithm 1, VP form) and its ablations: reconstruction guidance and fixed weights."""
from __future__ import annotations

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, ddim_coefficients, denoise_with_vjp, rows

__all__ = ["pigdm_coefficients", "guidance_vector", "reconstruction_vector", "pigdm_step", "rg_step"]


def pigdm_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 1.0, weight: float | None = None) -> dict[str, torch.Tensor]:
    """:func:`~pgdm.methods.common.ddim_coefficients` plus ``w``, the weight in front of the guidance g.

    ``weight=None``: ΠGDM's adaptive weight w = √ᾱ_t (Alg. 1; Eq. 10 with the VP scaling of App. A.1).
    ``weight=w_r``: the fixed weight of Ho et al. (2022) (ΠGDM Eq. 21, Tab. 5 "AW ✗"): x̂ + w_r g_VE enters the
    DDIM update, g_VE = √ᾱ_t g being the gradient w.r.t. the VE sample, so w = w_r √(ᾱ_s ᾱ_t).
    """
    coef = ddim_coefficients(alphas_cumprod, timesteps, eta)
    if weight is None:
        coef["w"] = coef["alpha_t"].sqrt()
    elif not weight > 0:
        raise ValueError(f"weight must be > 0 (a fixed guidance weight w_r) or None (adaptive), got {weight}")
    else:
        coef["w"] = weight * (coef["alpha_s"] * coef["alpha_t"]).sqrt()
    return coef


def guidance_vector(
    op: Operator, y: torch.Tensor, y_pinv: torch.Tensor, x0: torch.Tensor, r2: torch.Tensor, sigma_y2: torch.Tensor | None
) -> torch.Tensor:
    """The vector that multiplies ∂x̂/∂x in the ΠGDM guidance; no gradient flows through h or h†.

    Noiseless (``sigma_y2 is None``, Eq. 9/11): h†(y) − h†(h(x̂)), with ``y_pinv`` = h†(y) precomputed.
    Noisy linear (Eq. 7 times r_t², Alg. 1): Hᵀ(HHᵀ + σ_y²/r_t² I)⁻¹ (y − Hx̂) = ``op.regularized_pinv``,
    for the rows with σ_y > 0 (rows with σ_y = 0 in a mixed batch take the noiseless form).
    x0: (B, C, H, W) detached; r2: 0-d; sigma_y2: (B,) or None.
    """
    noiseless = y_pinv - op.project(x0)
    if sigma_y2 is None:
        return noiseless
    noisy = op.regularized_pinv(y - op(x0), sigma_y2 / r2)
    # rows with σ_y = 0 take the noiseless form, so a mixed batch gives each image what it gets alone
    return torch.where(rows(sigma_y2 > 0, noisy), noisy, noiseless)


def reconstruction_vector(
    op: Operator, y: torch.Tensor, y_pinv: torch.Tensor, x0: torch.Tensor, r2: torch.Tensor, sigma_y2: torch.Tensor | None
) -> torch.Tensor:
    """Reconstruction guidance's vector Hᵀ(y − Hx̂) (Ho et al. 2022; ΠGDM Eq. 14, App. A.2): the transpose where ΠGDM
    has the pseudoinverse. It models no measurement noise (ΠGDM Tab. 1), so σ_y does not enter it."""
    return op.adjoint(y - op(x0))


def _guided_step(vector, denoiser, x, coef, y, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised):
    x0, vjp, eps = denoise_with_vjp(denoiser, x, coef, class_labels, clip_denoised)
    g = vjp(vector(op, y, y_pinv, x0, coef["r2"], sigma_y2))
    x_next = coef["alpha_s"].sqrt() * x0 + coef["c1"] * noise + coef["c2"] * eps + coef["w"] * g
    return x_next, x0


def pigdm_step(
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
    """One ΠGDM update from t to s (Song et al. 2023, Algorithm 1, VP-SDE), returning (x_s, x̂_t).

    x̂_t = (x − √(1−ᾱ_t) ε_θ)/√ᾱ_t; g = (vᵀ ∂x̂_t/∂x)ᵀ with v from :func:`guidance_vector`;
    x_s = √ᾱ_s x̂_t + c1 ε + c2 ε_θ + w g (Eq. 10–11; w from :func:`pigdm_coefficients`).
    The vector–Jacobian product runs through the network only, w.r.t. x.

    Args:
        x: (B, C, H, W) current sample.
        coef: 0-d tensors ``t`` (int64), ``alpha_t``, ``alpha_s``, ``c1``, ``c2``, ``r2``, ``w`` for this step.
        y, y_pinv: the measurement and h†(y) (same batch).
        noise: (B, C, H, W) standard normal ε.
        sigma_y2: (B,) σ_y² in model units for noisy linear guidance, or None for the noiseless form.
        class_labels: (B,) int64 for class-conditional models.
        clip_denoised: clamp x̂ to the data range [-1, 1] before it enters h, h† and the DDIM update, and
            recompute ε_θ from the clamped x̂, as guided-diffusion's samplers do (``clip_denoised``). The VJP is
            still taken through the network's x̂. Near t = T, x̂ divides the network's ε error by √ᾱ_t (1/157
            for the linear schedule): unclamped, a linear h feeds that error back through g and an imperfect
            network diverges within a few steps. False is the literal Algorithm 1 (the analytic tests use it).
    """
    return _guided_step(guidance_vector, denoiser, x, coef, y, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised)


def rg_step(
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
    """ΠGDM's update with reconstruction guidance (ΠGDM Sec. 3.4, App. A.2, Eq. 14; Tab. 5 "ΠG ✗"):
    :func:`pigdm_step` with v = Hᵀ(y − Hx̂) (:func:`reconstruction_vector`). Arguments as :func:`pigdm_step`;
    linear operators only."""
    return _guided_step(reconstruction_vector, denoiser, x, coef, y, y_pinv, op, noise, sigma_y2, class_labels, clip_denoised)
