"""ΠGDM sampling (Song et al., ICLR 2023, Algorithm 1, VP form) as plain functions over batches.

``pigdm_coefficients`` precomputes every per-step scalar on the host in float64;
``pigdm_step`` is one update of Algorithm 1 and is what both :class:`Restorer` and
``pgdm.engine`` call. A step allocates nothing data-dependent, never syncs with the host and
reads its scalars from tensors, so it can be compiled and captured whole in a CUDA graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from . import schedules, validate
from .denoiser import Denoiser
from .interop import accepts_arrays
from .operators.base import Operator
from .operators.checks import check_measurement_fits
from .rng import gaussian_no_sync, stream_keys
from .units import sigma_to_model

__all__ = [
    "pigdm_coefficients",
    "pigdm_step",
    "input_vjp",
    "x0_and_eps",
    "guidance_vector",
    "plan_sampling",
    "run_pigdm",
    "step_inputs",
    "summarize_samples",
    "SamplingPlan",
    "NonFiniteError",
    "Restorer",
]

Coefficients = Mapping[str, torch.Tensor]


def pigdm_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float) -> dict[str, torch.Tensor]:
    """Per-step scalars of Algorithm 1 for the steps t_i → t_{i+1} (the last step goes to ᾱ = 1).

    Returns a dict of (N,) float64 tensors (``t`` is int64):
      t, alpha_t, alpha_s: timestep and ᾱ at the start and end of each step;
      c1 = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)), c2 = √(1 − ᾱ_s − c1²) (DDIM, Eq. 18–20);
      r2 = r_t² = σ_t²/(1 + σ_t²) = 1 − ᾱ_t with σ_t² = (1 − ᾱ_t)/ᾱ_t the VE noise level (Eq. 4, 12).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    acp = alphas_cumprod.to(torch.float64)
    alpha_t = acp[timesteps]
    alpha_s = torch.cat([acp[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    c1 = eta * ((1 - alpha_t / alpha_s) * (1 - alpha_s) / (1 - alpha_t)).clamp_min(0).sqrt()
    c2 = (1 - alpha_s - c1**2).clamp_min(0).sqrt()
    return {"t": timesteps.to(torch.int64), "alpha_t": alpha_t, "alpha_s": alpha_s, "c1": c1, "c2": c2, "r2": 1 - alpha_t}


def guidance_vector(
    op: Operator,
    y: torch.Tensor,
    y_pinv: torch.Tensor,
    x0: torch.Tensor,
    r2: torch.Tensor,
    sigma_y2: torch.Tensor | None,
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
    return torch.where((sigma_y2 > 0).view(-1, *([1] * (noisy.ndim - 1))), noisy, noiseless)


def x0_and_eps(
    denoiser: Denoiser, t: torch.Tensor, alpha_t: torch.Tensor, class_labels: torch.Tensor | None = None
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """x ↦ (x̂, ε_θ(x, t)) with x̂ = (x − √(1−ᾱ_t) ε_θ)/√ᾱ_t: the function whose input VJP guides the step.

    t: (B,) int64; alpha_t: 0-d ᾱ_t; class_labels: (B,) int64 or None. x: (B, C, H, W).
    """

    def denoise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = denoiser(x, t, class_labels)
        return denoiser.predict_x0(x, eps, alpha_t), eps

    return denoise


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
    """One ΠGDM update from t to s (Algorithm 1, VP-SDE), returning (x_s, x̂_t).

    x̂_t = (x − √(1−ᾱ_t) ε_θ)/√ᾱ_t; g = (vᵀ ∂x̂_t/∂x)ᵀ with v from :func:`guidance_vector`;
    x_s = √ᾱ_s x̂_t + c1 ε + c2 ε_θ + √ᾱ_t g (Eq. 10–11 with the VP scaling of App. A.1).
    The vector–Jacobian product runs through the network only, w.r.t. x (:func:`input_vjp`).

    Args:
        x: (B, C, H, W) current sample.
        coef: 0-d tensors ``t`` (int64), ``alpha_t``, ``alpha_s``, ``c1``, ``c2``, ``r2`` for this step.
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
    alpha_t = coef["alpha_t"]
    t = coef["t"].expand(x.shape[0])
    x0, vjp_fn, eps = input_vjp(x0_and_eps(denoiser, t, alpha_t, class_labels), x)
    x0_used = x0.clamp(-1, 1) if clip_denoised else x0
    v = guidance_vector(op, y, y_pinv, x0_used, coef["r2"], sigma_y2)
    (g,) = vjp_fn(v.to(x0.dtype))
    eps = (x - alpha_t.sqrt() * x0_used) / (1 - alpha_t).sqrt() if clip_denoised else eps
    x_next = coef["alpha_s"].sqrt() * x0_used + coef["c1"] * noise + coef["c2"] * eps + alpha_t.sqrt() * g
    return x_next, x0_used


@dataclass
class SamplingPlan:
    """Everything a ΠGDM run needs, prepared on the host before the loop (batch = num_samples × images)."""

    y: torch.Tensor  # (K·B, …) measurement, tiled K times
    y_pinv: torch.Tensor  # (K·B, C, H, W) h†(y)
    op: Operator
    keys: torch.Tensor  # (K·B,) int64 noise-stream keys on the device
    coefs: dict[str, torch.Tensor]  # (N,) per-step tensors on the device
    sigma_y2: torch.Tensor | None  # (K·B,) or None
    class_labels: torch.Tensor | None  # (K·B,) or None
    x_init: torch.Tensor  # (K·B, C, H, W) starting sample
    num_samples: int
    clip_denoised: bool = True


def plan_sampling(
    denoiser: Denoiser,
    y: torch.Tensor,
    op: Operator,
    *,
    steps: int,
    eta: float,
    start_step: int | None,
    sigma_y: float | Sequence[float] | torch.Tensor = 0.0,
    seed: int | Sequence[int] = 0,
    class_labels: int | Sequence[int] | torch.Tensor | None = None,
    num_samples: int = 1,
    dtype: torch.dtype = torch.float32,
    clip_denoised: bool = True,
) -> SamplingPlan:
    """Validate the request and precompute the per-run tensors (see :class:`Restorer.restore`)."""
    if not isinstance(y, torch.Tensor) or y.ndim < 2:
        raise ValueError(f"y must be a batch-first tensor (B, …), got {type(y).__name__} of shape {getattr(y, 'shape', None)}")
    num_samples = validate.positive_int("num_samples", num_samples)
    batch, device = y.shape[0], y.device
    y = y.to(dtype)
    finite = y.isfinite().flatten(1).all(1)
    if not bool(finite.all()):
        raise ValueError(f"y holds NaN or Inf in image(s) {(~finite).nonzero().flatten().tolist()} of the batch; measurements must be finite")
    op.check_measurement(y)
    if denoiser.image_size is not None:
        check_measurement_fits(op, y, (denoiser.channels, denoiser.image_size, denoiser.image_size))
    seeds = validate.seeds(seed, batch)
    sigma = torch.as_tensor(sigma_y, dtype=torch.float64).flatten()
    if sigma.numel() == 1:
        sigma = sigma.expand(batch)
    if sigma.numel() != batch or not bool(((sigma >= 0) & sigma.isfinite()).all()):
        raise ValueError(f"sigma_y must be a finite float ≥ 0 or one such value per image ({batch}), got {sigma_y}")
    sigma = sigma_to_model(sigma)  # pixel scale [0, 1] → the [-1, 1] scale the sampler works in
    noisy = bool((sigma > 0).any())
    if noisy and not op.linear:
        raise ValueError(
            f"sigma_y > 0 needs a linear operator (Eq. 7), but {op.spec} is non-linear; use sigma_y=0 (noiseless ΠGDM, Eq. 9)"
        )
    if class_labels is not None:
        class_labels = torch.as_tensor(class_labels, dtype=torch.int64, device=device).flatten()
        class_labels = class_labels.expand(batch) if class_labels.numel() == 1 else class_labels
        if class_labels.numel() != batch:
            raise ValueError(f"class_labels must be an int or one label per image ({batch}), got {class_labels.numel()}")

    k = num_samples
    op_k = op.repeat_batch(k)
    y_k = torch.cat([y] * k)
    y_pinv = op_k.pinv(y_k)
    denoiser.check_input(y_pinv.shape, class_labels)
    keys = torch.cat([stream_keys(seeds, j) for j in range(k)]).to(device)
    labels_k = None if class_labels is None else torch.cat([class_labels] * k)
    sigma_y2 = torch.cat([sigma.square()] * k).to(device, dtype) if noisy else None

    ts = schedules.timesteps(steps, denoiser.num_timesteps, start_step)
    coefs64 = pigdm_coefficients(denoiser.alphas_cumprod.cpu(), ts, eta)
    coefs = {n: v.to(device) if n == "t" else v.to(device, dtype) for n, v in coefs64.items()}
    shape = y_pinv.shape[1:]
    z = gaussian_no_sync(keys, -1, shape, dtype)  # counter −1: the initial draw, distinct from every step's
    if start_step is None:
        x_init = z
    else:  # SDEdit/CCDF start from h†(y) noised to ᾱ at start_step (App. B.1)
        a = coefs64["alpha_t"][0]
        x_init = float(a.sqrt()) * y_pinv + float((1 - a).sqrt()) * z
    return SamplingPlan(y_k, y_pinv, op_k, keys, coefs, sigma_y2, labels_k, x_init, k, clip_denoised)


def step_inputs(plan: SamplingPlan, i: int, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Step ``i`` of a plan: its 0-d coefficients and its (rows, C, H, W) standard-normal noise in ``dtype``
    (the counter-based draws every runner shares, so results do not depend on the runner)."""
    return {name: v[i] for name, v in plan.coefs.items()}, gaussian_no_sync(plan.keys, i, plan.x_init.shape[1:], dtype)


def run_pigdm(
    denoiser: Denoiser,
    plan: SamplingPlan,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Run every step of the plan eagerly; returns the final samples (K·B, C, H, W), unclamped."""
    x = plan.x_init
    for i in range(plan.coefs["t"].numel()):
        coef, noise = step_inputs(plan, i, x.dtype)
        x, x0 = pigdm_step(
            denoiser,
            x,
            coef,
            plan.y,
            plan.y_pinv,
            plan.op,
            noise,
            sigma_y2=plan.sigma_y2,
            class_labels=plan.class_labels,
            clip_denoised=plan.clip_denoised,
        )
        if callback is not None:
            callback({"i": i, "t": coef["t"], "x": x, "denoised": x0})
    return x


class NonFiniteError(ArithmeticError):
    """Sampling produced NaN or Inf for some images.

    Attributes: rows: the indices of the failed images in the batch; result: what ``restore`` would have
    returned (the failed rows are NaN), so a caller can keep the images that did finish.
    """

    def __init__(self, rows: list[int], result) -> None:
        super().__init__(f"sampling produced NaN/Inf for image(s) {rows} of the batch (a diverging model or a non-finite weight)")
        self.rows, self.result = rows, result


def summarize_samples(x: torch.Tensor, num_samples: int, return_std: bool):
    """(K·B, C, H, W) samples → their per-image mean in [-1, 1] (and per-pixel std across the K samples).

    Raises :class:`NonFiniteError` when an image's samples hold NaN or Inf (one host sync, after the loop).
    """
    x = x.unflatten(0, (num_samples, -1))  # (K, B, C, H, W)
    finite = x.isfinite().flatten(2).all(2).all(0)  # (B,)
    x = x.clamp(-1, 1)
    mean = x.mean(0)
    if not bool(finite.all()):
        rows = (~finite).nonzero().flatten().tolist()
        mean[~finite] = float("nan")
        std = x.std(0, unbiased=False) if num_samples > 1 else torch.zeros_like(mean)
        raise NonFiniteError(rows, (mean, std) if return_std else mean)
    if not return_std:
        return mean
    return mean, (x.std(0, unbiased=False) if num_samples > 1 else torch.zeros_like(mean))


class Restorer:
    """Restore images with ΠGDM from any measurement operator.

    Args:
        denoiser: the ε-prediction model (``pgdm.Denoiser`` / ``pgdm.load_model``).
        steps: number of sampling steps N (Alg. 1), uniformly spaced from ``start_step`` (default T−1) to 0.
        eta: DDIM η ∈ [0, 1] (1.0 as in the paper's main results).
        start_step: start from h†(y) noised to this timestep instead of pure noise (SDEdit/CCDF, App. B.1;
            the paper uses 500 of 1000 for SR×4 and 100 for deblurring).
        clip_denoised: clamp x̂ to [-1, 1] inside each step (see :func:`pigdm_step`); False is the literal Alg. 1.

    Example:
        >>> restorer = pgdm.Restorer(pgdm.load_model("default"), steps=50)
        >>> op = pgdm.ops.SuperResolution(4)
        >>> x = restorer.restore(op(clean), op, seed=0)   # (B, 1, 32, 32) in [-1, 1]
    """

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int = 100,
        eta: float = 1.0,
        start_step: int | None = None,
        clip_denoised: bool = True,
    ) -> None:
        schedules.timesteps(steps, denoiser.num_timesteps, start_step)  # validates steps/start_step
        eta = validate.real_in_range("eta", eta, 0.0, 1.0)
        self.denoiser, self.steps, self.eta, self.start_step = denoiser, steps, eta, start_step
        self.clip_denoised = clip_denoised

    @accepts_arrays
    @torch.no_grad()
    def restore(
        self,
        y: torch.Tensor,
        op: Operator,
        sigma_y: float | Sequence[float] | torch.Tensor = 0.0,
        seed: int | Sequence[int] = 0,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        *,
        num_samples: int = 1,
        return_std: bool = False,
        callback: Callable[[dict], None] | None = None,
    ):
        """Restore x from y = h(x) (+ N(0, σ_y²)).

        Args:
            y: (B, …) measurement as produced by ``op`` (on the device to run on), or any DLPack array
                (NumPy, CuPy, JAX): then the results come back as that array type (``pgdm.interop``).
            op: the measurement operator h (``pgdm.ops``).
            sigma_y: measurement noise std on the [0, 1] pixel scale, as the paper states it (0.05), while y
                itself is on the [-1, 1] scale (``pgdm.ops.GaussianNoise`` takes the same unit); a float or one per
                image. σ_y > 0 uses the noisy guidance of Eq. 7 and needs a linear ``op``.
            seed: an int (image i uses seed + i) or one int per image; results do not depend on the batch.
            class_labels: an int or (B,) labels for class-conditional models.
            num_samples: draw K posterior samples per image in one batch and return their mean (MMSE).
            return_std: also return the per-pixel std across the K samples (an uncertainty map).
            callback: called after every step with {"i", "t", "x", "denoised"}.
        Returns:
            (B, C, H, W) restored images in [-1, 1]; with ``return_std`` a (mean, std) pair.
        """
        dtype = torch.float64 if y.dtype == torch.float64 else torch.float32  # sampling math in fp32 (or fp64)
        plan = plan_sampling(
            self.denoiser,
            y,
            op,
            steps=self.steps,
            eta=self.eta,
            start_step=self.start_step,
            sigma_y=sigma_y,
            seed=seed,
            class_labels=class_labels,
            num_samples=num_samples,
            dtype=dtype,
            clip_denoised=self.clip_denoised,
        )
        x = run_pigdm(self.denoiser, plan, callback)
        return summarize_samples(x, num_samples, return_std)
