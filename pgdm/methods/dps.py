"""Diffusion posterior sampling (Chung et al., ICLR 2023, Algorithm 1)."""
from __future__ import annotations

import math

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, ddim_coefficients, denoise_with_vjp, rows

__all__ = ["dps_coefficients", "dps_step", "dps_task_defaults"]


# ζ' tuned with ``pgdm bench tune`` on Fashion-MNIST train images at these step counts (docs/methods.md)
_TUNED_SCALE = {
    "super-resolution": ((20, 15.0), (100, 3.0), (1000, 0.3)),
    "inpainting": ((20, 2.5), (100, 1.0), (1000, 0.3)),
}


def dps_task_defaults(op: Operator | None, steps: int) -> dict[str, float]:
    """ζ' for this task and number of steps.

    DPS takes one step of ζ' per iteration, so its total guidance grows with the steps: the best ζ' falls as the
    steps rise. Super-resolution and inpainting take the values tuned with ``pgdm bench tune`` on Fashion-MNIST
    train images, noiseless and at σ_y = 0.05 (inpainting: the best at σ_y = 0.05; at 100 steps the noiseless best,
    10, over-guides noisy measurements), log-linear in the steps between the tuned counts, held outside them:
    super-resolution 15 / 3 / 0.3 at 20 / 100 / 1000 steps (ζ'·N constant), inpainting 2.5 / 1 / 0.3. Every
    other task takes the reference code's value (``configs/*_config.yaml``, FFHQ and ImageNet alike): 0.3.
    """
    points = _TUNED_SCALE.get(op.family if op is not None else None)
    if points is None:
        return {"scale": 0.3}
    n = min(max(steps, points[0][0]), points[-1][0])
    (n0, s0), (n1, s1) = next((a, b) for a, b in zip(points, points[1:]) if n <= b[0])
    log_scale = math.log(s0) + (math.log(s1) - math.log(s0)) * (math.log(n) - math.log(n0)) / (math.log(n1) - math.log(n0))
    return {"scale": round(math.exp(log_scale), 6)}  # rounded: a tuned count gives its tuned value exactly


def dps_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 1.0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """DDIM's table (η = 1 is DDPM's ancestral step, which DPS uses) plus ``zeta`` = ζ', DPS's step size.

    DPS Alg. 1 steps ζ_i ∇‖y − A(x̂)‖² with ζ_i = ζ'/‖y − A(x̂)‖; its code takes ζ' ∇‖y − A(x̂)‖ (the same
    direction, the constant halved), which this follows. ``scale`` = ζ'; the method's default is per task
    (:func:`dps_task_defaults`).
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    coef = ddim_coefficients(alphas_cumprod, timesteps, eta)
    coef["zeta"] = torch.full_like(coef["alpha_t"], float(scale))
    return coef


def dps_step(
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
    """One DPS update (Chung et al. 2023, Algorithm 1, Gaussian noise): x_s = DDPM(x_t, x̂) − ζ' ∇_x ‖y − Hx̂‖.

    ∇_x ‖y − Hx̂‖ = −(∂x̂/∂x)ᵀ Hᵀ(y − Hx̂)/‖y − Hx̂‖, one VJP through the network; the norm is per image, so
    results do not depend on the batch. Handles noisy y as it is (σ_y does not enter). Linear h only; arguments
    and result as :func:`pgdm.methods.pigdm.pigdm_step`.
    """
    x0, vjp, eps = denoise_with_vjp(denoiser, x, coef, class_labels, clip_denoised)
    residual = y - op(x0)
    norm = residual.flatten(1).norm(dim=1).clamp_min(torch.finfo(residual.dtype).tiny)  # (B,)
    g = vjp(op.adjoint(residual) / rows(norm, x0))  # −∇_x ‖y − Hx̂‖
    x_next = coef["alpha_s"].sqrt() * x0 + coef["c1"] * noise + coef["c2"] * eps + coef["zeta"] * g
    return x_next, x0
