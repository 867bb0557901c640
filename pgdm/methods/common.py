"""What every restoration method shares: the method record, DDIM coefficients, the denoiser call with or without
its input-only VJP.

A method is one step function with the signature of :data:`StepFunction` plus a function that precomputes its
per-step scalars on the host in float64 (a dict of (N,) tensors, ``t`` int64). The runners (``pgdm.Restorer``,
``pgdm.engine``, the ONNX export) only ever see these two; they never know which method they run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import torch

from .. import validate
from ..denoiser import Denoiser
from ..operators.base import Operator

__all__ = [
    "Method",
    "StepFunction",
    "ddim_coefficients",
    "denoise",
    "denoise_with_vjp",
    "rows",
]

Coefficients = Mapping[str, torch.Tensor]


class StepFunction(Protocol):
    """One update x_t → x_s. x: (B, C, H, W); coef: this step's 0-d tensors; y, y_pinv: the measurement and
    h†(y); noise: (B, C, H, W) standard normal; sigma_y2: (B,) σ_y² in model units, or None when noiseless;
    class_labels: (B,) int64 or None; clip_denoised: clamp x̂ to [-1, 1]. Returns (x_s, x̂_t)."""

    def __call__(
        self,
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
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True, eq=False)
class Method:
    """A restoration method: its step, its coefficient table and what it needs from the operator.

    Attributes:
        name: the name ``Restorer(method=...)``, ``EngineConfig(method=...)`` and ``--methods`` take.
        step: the :data:`StepFunction`.
        coefficients: ``(alphas_cumprod (T,) float64, timesteps (N,) int64, **options) -> dict of (N,) float64``.
        defaults: option name → default (the paper's ImageNet-256 setting).
        needs: ``"any"`` (h and h† suffice), ``"linear"`` (Hᵀ: the VJP through h, or the adjoint) or ``"svd"``
            (the operator's closed-form SVD).
        vjp: the step differentiates through the network (one forward and one backward per step).
        paper: the citation, for tables and errors.
        task_defaults: ``(op, steps) -> {option: value}`` for the options whose reference setting depends on the task
            and the number of steps (their entry in ``defaults`` is None); ``op`` None gives the setting for an
            unnamed linear task.
        start_fraction: ``steps -> f``: where the method starts when no ``start_step`` is given, h†(y) noised to
            timestep round(f · T) (SDEdit/CCDF); None: pure noise at T − 1.
    """

    name: str
    step: StepFunction
    coefficients: Callable[..., dict[str, torch.Tensor]]
    defaults: Mapping[str, float | None]
    needs: str
    vjp: bool
    paper: str
    task_defaults: Callable[[Operator | None, int], Mapping[str, float]] | None = None
    start_fraction: Callable[[int], float] | None = None

    def default_start(self, T: int, steps: int) -> int | None:
        """The start step used when none is given, for ``steps`` steps of a model with T timesteps (None: pure noise
        at T − 1)."""
        return None if self.start_fraction is None else min(T - 1, round(self.start_fraction(steps) * T))

    def check_operator(self, op: Operator) -> None:
        """Raise a one-line ValueError when this method cannot run ``op``."""
        if self.needs == "linear" and not op.linear:
            raise ValueError(
                f"method {self.name!r} differentiates through h, but {op.spec} is not differentiable; use method='pigdm', which needs only h and h†"
            )
        if self.needs == "svd" and not op.decomposable:
            raise ValueError(
                f"method {self.name!r} needs an operator with a closed-form SVD (sr, inpaint, blur, identity), got {op.spec}; use method='pigdm'"
            )

    def options(self, given: Mapping[str, float | None] | None) -> dict[str, float | None]:
        """The defaults overridden by ``given``; raises a one-line ValueError for an unknown name."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise ValueError(f"method {self.name!r} has no option(s) {', '.join(unknown)}; its options: {known}")
        return {**self.defaults, **given}

    def resolve(self, options: Mapping[str, float | None], op: Operator | None, steps: int) -> dict[str, float | None]:
        """``options`` with every None that has a per-task setting replaced by the setting for ``op`` at ``steps`` steps."""
        if self.task_defaults is None:
            return dict(options)
        per_task = self.task_defaults(op, steps)
        return {k: per_task[k] if v is None and k in per_task else v for k, v in options.items()}


def _check_unit(name: str, value: float) -> float:
    return validate.real_in_range(name, value, 0.0, 1.0)


def ddim_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float) -> dict[str, torch.Tensor]:
    """DDIM's per-step scalars for the steps t_i → t_{i+1} (the last step goes to ᾱ = 1), (N,) float64 (``t`` int64):

    t, alpha_t, alpha_s: timestep and ᾱ at the start and end of each step;
    c1 = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)), c2 = √(1 − ᾱ_s − c1²) (Song et al. 2021, Eq. 12 and 16);
    r2 = r_t² = 1 − ᾱ_t (ΠGDM App. A.3).
    """
    eta = _check_unit("eta", eta)
    acp = alphas_cumprod.to(torch.float64)
    alpha_t = acp[timesteps]
    alpha_s = torch.cat([acp[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    c1 = eta * ((1 - alpha_t / alpha_s) * (1 - alpha_s) / (1 - alpha_t)).clamp_min(0).sqrt()
    c2 = (1 - alpha_s - c1**2).clamp_min(0).sqrt()
    return {"t": timesteps.to(torch.int64), "alpha_t": alpha_t, "alpha_s": alpha_s, "c1": c1, "c2": c2, "r2": 1 - alpha_t}


def rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) per-row tensor as (B, 1, …) broadcasting against ``like``."""
    return t.view(-1, *([1] * (like.ndim - 1)))


def _clipped(x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor, clip: bool):
    """x̂ clamped to [-1, 1] and ε recomputed from it (guided-diffusion's ``clip_denoised``), or both unchanged."""
    if not clip:
        return x0, eps
    x0 = x0.clamp(-1, 1)
    return x0, (x - alpha_t.sqrt() * x0) / (1 - alpha_t).sqrt()


def denoise(
    denoiser: Denoiser, x: torch.Tensor, coef: Coefficients, class_labels: torch.Tensor | None, clip_denoised: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_t, ε) for methods without a VJP: one network forward. x: (B, C, H, W)."""
    alpha_t = coef["alpha_t"]
    eps = denoiser(x, coef["t"].expand(x.shape[0]), class_labels)
    return _clipped(x, denoiser.predict_x0(x, eps, alpha_t), eps, alpha_t, clip_denoised)


def denoise_with_vjp(
    denoiser: Denoiser, x: torch.Tensor, coef: Coefficients, class_labels: torch.Tensor | None, clip_denoised: bool
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(x̂_t, v ↦ (vᵀ ∂x̂_t/∂x)ᵀ, ε) for guided methods. The VJP is taken through the network's x̂ (before
    clamping), w.r.t. x only (:meth:`~pgdm.Denoiser.eps_with_vjp`); ``v`` is cast to x̂'s dtype.

    x̂ = (x − √(1−ᾱ_t) ε_θ(x))/√ᾱ_t, so (∂x̂/∂x)ᵀ v = (v − √(1−ᾱ_t) (∂ε_θ/∂x)ᵀ v)/√ᾱ_t: only the network's VJP
    needs autograd, and nothing canvas-sized is kept for it but what the denoiser keeps."""
    alpha_t = coef["alpha_t"]
    eps, eps_vjp = denoiser.eps_with_vjp(x, coef["t"].expand(x.shape[0]), class_labels)
    x0 = denoiser.predict_x0(x, eps, alpha_t)
    dtype = x0.dtype
    x0, eps = _clipped(x, x0, eps, alpha_t, clip_denoised)

    def vjp(v: torch.Tensor) -> torch.Tensor:
        v = v.to(dtype)
        return (v - (1 - alpha_t).sqrt() * eps_vjp(v)) / alpha_t.sqrt()

    return x0, vjp, eps
