"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu et al., CVPRW 2023)."""
from __future__ import annotations

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, denoise

__all__ = ["diffpir_coefficients", "diffpir_step", "diffpir_task_defaults"]


def diffpir_task_defaults(op: Operator | None, steps: int) -> dict[str, float]:
    """λ and ζ of DiffPIR's reference scripts, the same at every number of ``steps``: λ = 1, ζ = 1 for inpainting
    (``main_ddpir_inpainting.py``); λ = 7, ζ = 0.3 for deblurring (``main_ddpir_deblur.py``) and every other
    task. ρ_t = λσ_n²/σ̄_t² is taken with σ_n and σ̄_t in one unit (the model's [-1, 1] scale); the scripts take σ_n on the [0, 1]
    scale, so their ρ_t is that of ``lam`` = λ/4 here. λ enters only when σ_y > 0 (noiseless, the data step
    is the exact limit ρ_t → 0; the scripts put σ_n = 0.001 there). Super-resolution takes ζ = 1 instead, tuned
    with ``pgdm bench tune`` on Fashion-MNIST train images (19.5 against 17.1 dB for ζ = 0.3 at 20 steps)."""
    if op is not None and op.family == "super-resolution":
        return {"lam": 7.0, "zeta": 1.0}
    return {"lam": 1.0, "zeta": 1.0} if op is not None and op.family == "inpainting" else {"lam": 7.0, "zeta": 0.3}


def diffpir_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, lam: float = 7.0, zeta: float = 0.3) -> dict[str, torch.Tensor]:
    """DiffPIR's per-step scalars, (N,) float64 (``t`` int64): t, alpha_t, alpha_s,
    rho = λ/σ̄_t² with σ̄_t² = (1 − ᾱ_t)/ᾱ_t (ρ_t = λ σ_n²/σ̄_t² once multiplied by the image's σ_n², Alg. 1),
    c_eps = √(1 − ᾱ_s) √(1 − ζ) and c_noise = √(1 − ᾱ_s) √ζ (Alg. 1, line 6). The method's defaults are per
    task (:func:`diffpir_task_defaults`)."""
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    acp = alphas_cumprod.to(torch.float64)
    alpha_t = acp[timesteps]
    alpha_s = torch.cat([acp[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    return {
        "t": timesteps.to(torch.int64),
        "alpha_t": alpha_t,
        "alpha_s": alpha_s,
        "rho": lam * alpha_t / (1 - alpha_t),
        "c_eps": (1 - alpha_s).sqrt() * (1 - zeta) ** 0.5,
        "c_noise": (1 - alpha_s).sqrt() * zeta**0.5,
    }


def diffpir_step(
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
    """One DiffPIR update (Zhu et al. 2023, Algorithm 1). No VJP.

    Data step in closed form: x̂' = argmin_x ‖y − Hx‖² + ρ_t ‖x − x̂‖² = x̂ + Hᵀ(HHᵀ + ρ_t I)⁻¹(y − Hx̂)
    (``op.regularized_pinv``), ρ_t = λ σ_y²/σ̄_t² per image; noiseless, the limit ρ_t → 0: x̂ + h†(y) − h†(h(x̂)).
    Then ε̂ = (x_t − √ᾱ_t x̂')/√(1 − ᾱ_t) and x_s = √ᾱ_s x̂' + √(1 − ᾱ_s)(√(1 − ζ) ε̂ + √ζ ε).
    Returns (x_s, x̂'). Arguments as :func:`pgdm.methods.pigdm.pigdm_step`.
    """
    x0, _ = denoise(denoiser, x, coef, class_labels, clip_denoised)
    if sigma_y2 is None:
        x0_hat = x0 + y_pinv - op.project(x0)
    else:
        x0_hat = x0 + op.regularized_pinv(y - op(x0), sigma_y2 * coef["rho"])
    alpha_t = coef["alpha_t"]
    eps_hat = (x - alpha_t.sqrt() * x0_hat) / (1 - alpha_t).sqrt()
    return coef["alpha_s"].sqrt() * x0_hat + coef["c_eps"] * eps_hat + coef["c_noise"] * noise, x0_hat
