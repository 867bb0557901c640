"""C-ΠGDM: ΠGDM's probability-flow ODE integrated with a conditional conjugate integrator (Pandey, Yang, Mandt,
"Fast Samplers for Inverse Problems in Iterative Refinement Models", NeurIPS 2024, Sec. 2.2–2.3).

Write the VP schedule in b = −log ᾱ (db = β dt), μ = √ᾱ = e^{−b/2}, σ = √(1 − ᾱ). With the guidance weight
w_t = w r_t² μ² (r_t² = σ², ΠGDM App. A.3) the ΠGDM probability-flow ODE reads

    dx/db = −½ (I − wP) x + G(x, b),   P = h†∘h (an orthogonal projection for a linear h),
    G = ½ ε/σ − ½ w μ (v + P x̂) − ½ w σ P ε + ½ w μ σ Jᵀv,   J = ∂ε/∂x, v the ΠGDM guidance vector,

because (∂x̂/∂x)ᵀ = (I − σJᵀ)/μ and P x̂ = (P x − σ P ε)/μ (noiseless: v + P x̂ = h†(y)). The stiff linear part
is removed exactly by the transform x̄ = A(b) x, A = e^{λτ(b)} e^{b/2} [(I − P) + e^{−wb/2} P] (τ ∈ [0, 1] the
continuous time of the schedule, B_t = λI the paper's free linear term, integrated by Euler). Over one step
b_t → b_s the network terms ε, Jᵀv and v + P x̂ are frozen at x_t and their b-dependent scalar weights are
integrated exactly; mapping back with A_s⁻¹ gives

    x_s = a_x x + a_e ε + a_j Jᵀv + P(d_x x + d_e ε + d_j Jᵀv) + c_y (v + P x̂),

with every scalar precomputed on the host in float64 (:func:`cpigdm_coefficients`), ε, Jᵀv taken from one
network forward and one VJP, and two applications of P per step.

Noisy measurements (σ_y > 0) use ΠGDM's noisy guidance vector v = Hᵀ(HHᵀ + σ_y²/r_t² I)⁻¹(y − Hx̂) in the same
update: the transform keeps the noiseless P, and the σ_y-dependent remainder (v + P x̂ − h†(y), in the range of
Hᵀ) is frozen over the step with the weight of the y term. This is exact as σ_y → 0, takes each row's own σ_y
and needs only h, h†, the regularised h†. (The paper expands the transform itself to first order in σ_y²; that
expansion grows like log(σ_t) as σ_t → 0, needs (h†)ᵀ and makes the table depend on σ_y.)

The construction needs P to be linear (it splits P x̂ into P x and P ε and exponentiates P): linear operators
only. For JPEG and quantisation h†∘h is not linear, so there is no conjugate transform; use ΠGDM there.
"""
from __future__ import annotations

import math

import torch

from ..denoiser import Denoiser
from ..operators.base import Operator
from .common import Coefficients, denoise_with_vjp
from .pigdm import guidance_vector

__all__ = ["cpigdm_coefficients", "cpigdm_start_fraction", "cpigdm_step", "gauss_legendre"]

_NODES = 8  # Gauss–Legendre nodes per schedule interval: the weights are smooth there, so 8 reach float64


def cpigdm_start_fraction(steps: int) -> float:
    """Where C-ΠGDM starts by default, as a fraction of T: h†(y) noised to 0.4 T for up to 5 steps (the paper's
    start for 4× SR), 0.6 T for more. Both were the best of {0.2, 0.4, 0.5, 0.6, T − 1} on 8 Fashion-MNIST train
    images (SR×4, centre inpainting; docs/few-step.md); more steps can afford a later start."""
    return 0.4 if steps <= 5 else 0.6


def gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [-1, 1] (Golub–Welsch), (n,) float64 each."""
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / (4 * k**2 - 1).sqrt()
    nodes, vecs = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return nodes, 2 * vecs[0] ** 2


def _cumulative_integrals(acp: torch.Tensor, w: float, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∫ from the clean end (ᾱ = 1) to each table entry of the five step weights, in ρ = √((1 − ᾱ)/ᾱ).

    In ρ the weights of A(b) G(b) db are smooth: ε⊥: e^{λτ}; ε∥: e^{λτ}(1 + (1−w)ρ²)(1+ρ²)^{−1−w/2};
    (Jᵀv)⊥: w e^{λτ}ρ²(1+ρ²)^{−3/2}; (Jᵀv)∥: w e^{λτ}ρ²(1+ρ²)^{−3/2−w/2}; y: −w e^{λτ}ρ(1+ρ²)^{−1−w/2}.
    τ is linear in b between entries, τ_i = (i + 1)/T (τ = 0 at ᾱ = 1).
    Returns (F (5, T+1), ρ (T+1,), τ (T+1,)); index 0 is the clean end, index i + 1 timestep i.
    """
    T = acp.numel()
    b = torch.cat([torch.zeros(1, dtype=torch.float64), -acp.log()])  # (T+1,)
    rho = b.expm1().clamp_min(0).sqrt()
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    nodes, weights = gauss_legendre(_NODES)
    lo, hi = rho[:-1, None], rho[1:, None]  # (T, 1) interval ends
    r = lo + (hi - lo) * (nodes + 1) / 2  # (T, n) nodes in ρ
    frac = (torch.log1p(r**2) - b[:-1, None]) / (b[1:, None] - b[:-1, None])
    e = torch.exp(lam * (tau[:-1, None] + frac / T))  # e^{λτ} at the nodes
    q = 1 + r**2
    f = torch.stack([
        e,
        e * (1 + (1 - w) * r**2) * q ** (-1 - w / 2),
        w * e * r**2 * q**-1.5,
        w * e * r**2 * q ** (-1.5 - w / 2),
        -w * e * r * q ** (-1 - w / 2),
    ])  # (5, T, n)
    per_interval = (f * weights).sum(-1) * (hi - lo).T / 2  # (5, T)
    F = torch.cat([torch.zeros(5, 1, dtype=torch.float64), per_interval.cumsum(1)], 1)
    return F, rho, tau


def cpigdm_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, w: float = 16.0, lam: float = 0.0) -> dict[str, torch.Tensor]:
    """C-ΠGDM's per-step scalars for t_i → t_{i+1} (the last step to ᾱ = 1), (N,) float64 (``t`` int64).

    ``w``: the guidance weight of w_t = w r_t² ᾱ_t; ``lam``: λ of B_t = λI (the paper tunes both per task;
    its code's defaults are w = 1, λ = 0). Defaults w = 16, λ = 0: the best of w ∈ {1, 2, 4, 8, 16} on the
    default model and on the analytic mixture prior (docs/few-step.md).

    Entries: t, alpha_t, r2 = 1 − ᾱ_t (for the guidance vector and the denoiser); jv_v = 1/σ_t and
    jv_q = μ_t/σ_t (Jᵀv = jv_v v − jv_q (∂x̂/∂x)ᵀv); a_x, a_e, a_j (on I − P) and d_x, d_e, d_j (the P part
    minus the I − P part) of the update in the module docstring; c_y, the weight of v + P x̂.
    """
    if not (w > 0 and math.isfinite(w)):
        raise ValueError(f"w must be a finite guidance weight > 0, got {w}")
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    acp = alphas_cumprod.to(torch.float64)
    F, rho, tau = _cumulative_integrals(acp, float(w), float(lam))
    i_t = timesteps.to(torch.int64) + 1  # table index of each step's start
    i_s = torch.cat([i_t[1:], torch.zeros(1, dtype=torch.int64)])  # and of its end (0: ᾱ = 1)
    euler = 1 + lam * (tau[i_s] - tau[i_t])  # B_t = λI by Euler, as the paper integrates it
    if not bool((euler > 0).all()):
        raise ValueError(f"lam must satisfy 1 + λΔτ > 0 for every step (|λ| < 1 always does), got {lam}")

    def scale(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # A's factors on I − P and on P
        e = torch.exp(lam * tau[i]) * (1 + rho[i] ** 2).sqrt()
        return e, e * (1 + rho[i] ** 2) ** (-w / 2)

    (perp_t, par_t), (perp_s, par_s) = scale(i_t), scale(i_s)
    integral = F[:, i_s] - F[:, i_t]  # (5, N): ∫ from b_t to b_s
    a_x, p_x = euler * perp_t / perp_s, euler * par_t / par_s
    a_e, p_e = integral[0] / perp_s, integral[1] / par_s
    a_j, p_j = integral[2] / perp_s, integral[3] / par_s
    alpha_t = acp[timesteps]
    sigma_t = (1 - alpha_t).sqrt()
    return {
        "t": timesteps.to(torch.int64),
        "alpha_t": alpha_t,
        "r2": 1 - alpha_t,
        "jv_v": 1 / sigma_t,
        "jv_q": alpha_t.sqrt() / sigma_t,
        "a_x": a_x,
        "a_e": a_e,
        "a_j": a_j,
        "d_x": p_x - a_x,
        "d_e": p_e - a_e,
        "d_j": p_j - a_j,
        "c_y": integral[4] / par_s,
    }


def cpigdm_step(
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
    """One C-ΠGDM update from t to s (Pandey et al. 2024, conjugate ΠGDM, Sec. 2.3), returning (x_s, x̂_t).

    Deterministic (the probability-flow ODE): ``noise`` is not used. One network forward and one VJP, as ΠGDM.

    Args:
        x: (B, C, H, W) current sample.
        coef: this step's 0-d entries of :func:`cpigdm_coefficients`.
        y, y_pinv: the measurement and h†(y) (same batch); ``op`` linear.
        noise: (B, C, H, W), ignored.
        sigma_y2: (B,) σ_y² in model units (ΠGDM's noisy guidance vector, per row), or None (noiseless).
        class_labels: (B,) int64 for class-conditional models.
        clip_denoised: clamp x̂ to [-1, 1] and recompute ε from it (see :func:`pgdm.methods.pigdm.pigdm_step`).
    """
    x0, vjp, eps = denoise_with_vjp(denoiser, x, coef, class_labels, clip_denoised)
    v = guidance_vector(op, y, y_pinv, x0, coef["r2"], sigma_y2)
    jv = coef["jv_v"] * v - coef["jv_q"] * vjp(v)  # Jᵀv = (v − μ (∂x̂/∂x)ᵀv)/σ
    target = y_pinv if sigma_y2 is None else v + op.project(x0)  # h†(y) when noiseless
    x_next = (
        coef["a_x"] * x + coef["a_e"] * eps + coef["a_j"] * jv + coef["c_y"] * target
        + op.project(coef["d_x"] * x + coef["d_e"] * eps + coef["d_j"] * jv)
    )  # fmt: skip
    return x_next, x0
