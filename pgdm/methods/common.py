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
    "input_vjp",
    "x0_and_eps",
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


def x0_and_eps(
    denoiser: Denoiser, t: torch.Tensor, alpha_t: torch.Tensor, class_labels: torch.Tensor | None = None
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """x ↦ (x̂, ε_θ(x, t)) with x̂ = (x − √(1−ᾱ_t) ε_θ)/√ᾱ_t: the function whose input VJP guides a step.

    t: (B,) int64; alpha_t: 0-d ᾱ_t; class_labels: (B,) int64 or None. x: (B, C, H, W).
    """

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = denoiser(x, t, class_labels)
        return denoiser.predict_x0(x, eps, alpha_t), eps

    return f


def input_vjp(
    f: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor
) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[torch.Tensor]], torch.Tensor]:
    """(out, vjp_fn, aux) for ``out, aux = f(x)`` (both tensors): ``vjp_fn(v)`` is ``((∂out/∂x)ᵀ v,)``, x the only
    input differentiated, as ``torch.func.vjp(f, x, has_aux=True)`` gives them.

    The usual case (eager, under ``no_grad`` or with an x that needs no gradient; also under ``make_fx``):
    ``torch.autograd.grad`` w.r.t. a detached copy of x under ``enable_grad``; it computes no weight gradients
    even for trainable weights, and ``vjp_fn`` may be called once. ``torch.func.vjp`` would cost more there: its
    dispatch layers take 8 % under ``no_grad``, and with grad mode on it runs GroupNorm's and SiLU's backward as
    decomposed elementwise ops (+35 %) (default model, batch 16, CPU; benchmarks/RESULTS.md). Everything else takes
    ``torch.func.vjp``: dynamo tracing (it compiles with ``fullgraph`` on every torch the engine supports; torch
    2.11's dynamo refuses ``requires_grad_()``), inference mode or inference tensors, and an x that itself needs a
    gradient (the caller differentiates through the step).
    """
    if (
        torch.compiler.is_dynamo_compiling()
        or torch.is_inference_mode_enabled()
        or x.is_inference()
        or (x.requires_grad and torch.is_grad_enabled())
    ):
        return torch.func.vjp(f, x, has_aux=True)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_()
        out, aux = f(x_in)

    def vjp_fn(v: torch.Tensor) -> tuple[torch.Tensor]:
        if not out.requires_grad:  # f ignores x (and has no trainable weights): a zero Jacobian
            return (torch.zeros_like(x),)
        return torch.autograd.grad(out, x_in, v, allow_unused=True, materialize_grads=True)

    return out.detach(), vjp_fn, aux.detach()


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
    x0, eps = x0_and_eps(denoiser, coef["t"].expand(x.shape[0]), alpha_t, class_labels)(x)
    return _clipped(x, x0, eps, alpha_t, clip_denoised)


def denoise_with_vjp(
    denoiser: Denoiser, x: torch.Tensor, coef: Coefficients, class_labels: torch.Tensor | None, clip_denoised: bool
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(x̂_t, v ↦ (vᵀ ∂x̂_t/∂x)ᵀ, ε) for guided methods. The VJP is taken through the network's x̂ (before
    clamping), w.r.t. x only (:func:`input_vjp`); ``v`` is cast to x̂'s dtype."""
    alpha_t = coef["alpha_t"]
    x0, vjp_fn, eps = input_vjp(x0_and_eps(denoiser, coef["t"].expand(x.shape[0]), alpha_t, class_labels), x)
    x0_used, eps = _clipped(x, x0, eps, alpha_t, clip_denoised)
    return x0_used, lambda v: vjp_fn(v.to(x0.dtype))[0], eps
