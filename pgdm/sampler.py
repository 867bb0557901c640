"""The one restore interface: settings → plan → loop, for every method (:mod:`pgdm.methods`).

:class:`SamplerSettings` validates a method and its settings once; :func:`plan_sampling` prepares every
per-run tensor on the host (measurement, h†(y), noise keys, the method's float64 coefficient table cast for
the device); :func:`run_eager` runs the method's step over the plan. :class:`Restorer` and ``pgdm.engine``
share :class:`RestoreInterface`'s ``restore``: they differ only in how they run a plan. A step allocates
nothing data-dependent, never syncs with the host and reads its scalars from tensors, so it can be
compiled and captured whole in a CUDA graph.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Sequence

import torch

from . import schedules, validate
from .denoiser import Denoiser
from .interop import accepts_arrays
from .methods import Method, get_method
from .operators.base import Operator
from .operators.checks import check_measurement_fits
from .rng import gaussian_no_sync, stream_keys
from .units import sigma_to_model

__all__ = [
    "SamplerSettings",
    "plan_sampling",
    "run_eager",
    "step_inputs",
    "summarize_samples",
    "SamplingPlan",
    "NonFiniteError",
    "RestoreInterface",
    "Restorer",
    "settings_from",
]


@dataclass(frozen=True)
class SamplerSettings:
    """A restoration method and its settings, validated once (``Restorer`` and ``EngineConfig`` both hold one).

    Attributes:
        method: a name from :data:`pgdm.methods.METHODS` (``"pigdm"``, ``"rg"``, ``"dps"``, ``"ddnm"``,
            ``"ddnm+"``, ``"diffpir"``, ``"ddrm"``, ``"cpigdm"``).
        steps: number of sampling steps N, uniformly spaced from ``start_step`` (default T−1) to 0.
        start_step: start from h†(y) noised to this timestep instead of pure noise (SDEdit/CCDF, ΠGDM App. B.1).
        clip_denoised: clamp x̂ to [-1, 1] inside each step (see :func:`pgdm.methods.pigdm.pigdm_step`).
        options: the method's options over its defaults (e.g. ``{"eta": 0.5}``, ``{"weight": 2.0}``), stored
            as sorted (name, value) pairs with every default filled in.
    """

    method: str = "pigdm"
    steps: int = 100
    start_step: int | None = None
    clip_denoised: bool = True
    options: Mapping[str, float | None] | tuple = ()

    def __post_init__(self) -> None:
        m = get_method(self.method)
        object.__setattr__(self, "method", m.name)
        opts = m.options(dict(self.options))
        m.coefficients(schedules.linear(2), torch.tensor([1, 0]), **m.resolve(opts, None))  # checks the values (one-line errors)
        object.__setattr__(self, "options", tuple(sorted(opts.items())))

    @property
    def spec(self) -> Method:
        """The :class:`~pgdm.methods.Method` record."""
        return get_method(self.method)

    def check_model(self, denoiser: Denoiser) -> None:
        """Raise a one-line ValueError when ``steps``/``start_step`` do not fit the model's T."""
        schedules.timesteps(self.steps, denoiser.num_timesteps, self.start_step)

    def method_options(self, op: Operator | None = None) -> dict[str, float | None]:
        """The method's options for ``op``: per-task reference settings fill the options left at None."""
        return self.spec.resolve(dict(self.options), op)

    def coefficients(self, alphas_cumprod: torch.Tensor, op: Operator | None = None) -> dict[str, torch.Tensor]:
        """The method's (N,) float64 per-step table for this schedule (and ``op``, for per-task settings)."""
        ts = schedules.timesteps(self.steps, alphas_cumprod.numel(), self.start_step)
        return self.spec.coefficients(alphas_cumprod.cpu(), ts, **self.method_options(op))


@dataclass
class SamplingPlan:
    """Everything a run needs, prepared on the host before the loop (batch = num_samples × images)."""

    y: torch.Tensor  # (K·B, …) measurement, tiled K times
    y_pinv: torch.Tensor  # (K·B, C, H, W) h†(y)
    op: Operator
    keys: torch.Tensor  # (K·B,) int64 noise-stream keys on the device
    coefs: dict[str, torch.Tensor]  # (N,) per-step tensors on the device (the method's table)
    sigma_y2: torch.Tensor | None  # (K·B,) σ_y² in model units, or None
    class_labels: torch.Tensor | None  # (K·B,) or None
    x_init: torch.Tensor  # (K·B, C, H, W) starting sample
    num_samples: int
    clip_denoised: bool = True
    method: str = "pigdm"  # the name of the method whose table ``coefs`` is

    ROW_FIELDS: ClassVar[tuple[str, ...]] = ("x_init", "y", "y_pinv", "keys", "sigma_y2", "class_labels")  # (rows, …) each, or None

    @property
    def step(self) -> Callable:
        """The method's step function."""
        return get_method(self.method).step

    @property
    def rows(self) -> int:
        """K·B, the batch the loop runs."""
        return self.x_init.shape[0]

    def row_tensors(self) -> dict[str, torch.Tensor | None]:
        """The per-row tensors by name (:attr:`ROW_FIELDS`): what concatenating, slicing, padding or loading a plan touches."""
        return {name: getattr(self, name) for name in self.ROW_FIELDS}

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor], op: Operator) -> "SamplingPlan":
        """A plan whose per-row tensors are ``fn`` of these (None stays None), with operator ``op`` for its rows."""
        mapped = {name: None if t is None else fn(t) for name, t in self.row_tensors().items()}
        return dataclasses.replace(self, op=op, **mapped)

    @staticmethod
    def join_rows(plans: Sequence["SamplingPlan"], op: Operator) -> "SamplingPlan":
        """One plan running the rows of ``plans`` one after another (same method, table and settings), with ``op``."""
        joined = {name: None if getattr(plans[0], name) is None else torch.cat([getattr(p, name) for p in plans]) for name in SamplingPlan.ROW_FIELDS}
        return dataclasses.replace(plans[0], op=op, num_samples=1, **joined)


def plan_sampling(
    denoiser: Denoiser,
    y: torch.Tensor,
    op: Operator,
    settings: SamplerSettings | None = None,
    *,
    sigma_y: float | Sequence[float] | torch.Tensor = 0.0,
    seed: int | Sequence[int] = 0,
    class_labels: int | Sequence[int] | torch.Tensor | None = None,
    num_samples: int = 1,
    dtype: torch.dtype = torch.float32,
) -> SamplingPlan:
    """Validate the request and precompute the per-run tensors (see :meth:`RestoreInterface.restore`).

    ``settings``: the method and its settings (default: ΠGDM, 100 steps). σ_y is on the [0, 1] pixel scale;
    this is the one place it is converted to the [-1, 1] model scale (:func:`pgdm.units.sigma_to_model`).
    """
    settings = settings or SamplerSettings()
    method = settings.spec
    if not isinstance(y, torch.Tensor) or y.ndim < 2:
        raise ValueError(f"y must be a batch-first tensor (B, …), got {type(y).__name__} of shape {getattr(y, 'shape', None)}")
    num_samples = validate.positive_int("num_samples", num_samples)
    batch, device = y.shape[0], y.device
    y = y.to(dtype)
    finite = y.isfinite().flatten(1).all(1)
    if not bool(finite.all()):
        raise ValueError(f"y holds NaN or Inf in image(s) {(~finite).nonzero().flatten().tolist()} of the batch; measurements must be finite")
    op.check_measurement(y)
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
    method.check_operator(op)
    if denoiser.image_size is not None:
        check_measurement_fits(op, y, (denoiser.channels, denoiser.image_size, denoiser.image_size))
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

    settings.check_model(denoiser)
    coefs64 = settings.coefficients(denoiser.alphas_cumprod, op)
    coefs = {n: v.to(device) if n == "t" else v.to(device, dtype) for n, v in coefs64.items()}
    shape = y_pinv.shape[1:]
    z = gaussian_no_sync(keys, -1, shape, dtype)  # counter −1: the initial draw, distinct from every step's
    if settings.start_step is None:
        x_init = z
    else:  # SDEdit/CCDF start from h†(y) noised to ᾱ at start_step (ΠGDM App. B.1)
        a = coefs64["alpha_t"][0]
        x_init = float(a.sqrt()) * y_pinv + float((1 - a).sqrt()) * z
    return SamplingPlan(y_k, y_pinv, op_k, keys, coefs, sigma_y2, labels_k, x_init, k, settings.clip_denoised, method.name)


def step_inputs(plan: SamplingPlan, i: int, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Step ``i`` of a plan: its 0-d coefficients and its (rows, C, H, W) standard-normal noise in ``dtype``
    (the counter-based draws every runner shares, so results do not depend on the runner)."""
    return {name: v[i] for name, v in plan.coefs.items()}, gaussian_no_sync(plan.keys, i, plan.x_init.shape[1:], dtype)


def run_eager(denoiser: Denoiser, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Run every step of the plan's method eagerly; returns the final samples (K·B, C, H, W), unclamped.

    callback: called after every step with {"i", "t", "x", "denoised"}.
    """
    x, step = plan.x_init, plan.step
    for i in range(plan.coefs["t"].numel()):
        coef, noise = step_inputs(plan, i, x.dtype)
        x, x0 = step(
            denoiser, x, coef, plan.y, plan.y_pinv, plan.op, noise,
            sigma_y2=plan.sigma_y2, class_labels=plan.class_labels, clip_denoised=plan.clip_denoised,
        )  # fmt: skip
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


class RestoreInterface:
    """``restore`` and ``plan``, written once for :class:`Restorer` and ``pgdm.engine.Engine``: subclasses set
    ``denoiser`` and ``settings`` (a :class:`SamplerSettings`) and implement ``run_plan``."""

    denoiser: Denoiser
    settings: SamplerSettings

    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Every step of ``plan``; returns the final samples (rows, C, H, W), unclamped."""
        raise NotImplementedError

    def plan(self, y, op, sigma_y=0.0, seed=0, class_labels=None, *, num_samples: int = 1) -> SamplingPlan:
        """:func:`plan_sampling` with these settings (float32 math; float64 for float64 y)."""
        dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        return plan_sampling(
            self.denoiser, y, op, self.settings, sigma_y=sigma_y, seed=seed, class_labels=class_labels, num_samples=num_samples, dtype=dtype
        )

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
                image. σ_y > 0 needs a linear ``op``.
            seed: an int (image i uses seed + i) or one int per image; results do not depend on the batch.
            class_labels: an int or (B,) labels for class-conditional models.
            num_samples: draw K posterior samples per image in one batch and return their mean (MMSE).
            return_std: also return the per-pixel std across the K samples (an uncertainty map).
            callback: called after every step with {"i", "t", "x"} (and "denoised" when run eagerly by ``Restorer``).
        Returns:
            (B, C, H, W) restored images in [-1, 1]; with ``return_std`` a (mean, std) pair.
        """
        plan = self.plan(y, op, sigma_y, seed, class_labels, num_samples=num_samples)
        return summarize_samples(self.run_plan(plan, callback), num_samples, return_std)


class Restorer(RestoreInterface):
    """Restore images with any method of :mod:`pgdm.methods` (ΠGDM by default) from any measurement operator.

    Args:
        denoiser: the ε-prediction model (``pgdm.Denoiser`` / ``pgdm.load_model``).
        steps: number of sampling steps N, uniformly spaced from ``start_step`` (default T−1) to 0.
        eta: DDIM η ∈ [0, 1] for the methods that have one; None: the method's default (ΠGDM: 1.0).
        start_step: start from h†(y) noised to this timestep instead of pure noise (SDEdit/CCDF, App. B.1;
            the paper uses 500 of 1000 for SR×4 and 100 for deblurring).
        clip_denoised: clamp x̂ to [-1, 1] inside each step; False is the literal algorithm.
        method: ``"pigdm"``, ``"rg"``, ``"dps"``, ``"ddnm"``, ``"ddnm+"``, ``"diffpir"``, ``"ddrm"`` or ``"cpigdm"`` (docs/methods.md).
        options: the method's other options, e.g. ``{"weight": 2.0}`` (fixed ΠGDM weight), ``{"scale": 0.5}`` (DPS ζ').

    Example:
        >>> restorer = pgdm.Restorer(pgdm.load_model("default"), steps=50, method="ddnm")
        >>> op = pgdm.ops.SuperResolution(4)
        >>> x = restorer.restore(op(clean), op, seed=0)   # (B, 1, 32, 32) in [-1, 1]
    """

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int = 100,
        eta: float | None = None,
        start_step: int | None = None,
        clip_denoised: bool = True,
        *,
        method: str = "pigdm",
        options: Mapping[str, float | None] | None = None,
    ) -> None:
        self.settings = settings_from(method, steps, eta, start_step, clip_denoised, options)
        self.settings.check_model(denoiser)
        self.denoiser = denoiser

    @property
    def steps(self) -> int:
        return self.settings.steps

    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        return run_eager(self.denoiser, plan, callback)


def settings_from(
    method: str, steps: int, eta: float | None, start_step: int | None, clip_denoised: bool, options: Mapping[str, float | None] | None
) -> SamplerSettings:
    """:class:`SamplerSettings` from the flat arguments ``Restorer`` and ``EngineConfig`` take (``eta`` joins the options)."""
    options = dict(options or {})
    if eta is not None:
        if "eta" in options:
            raise ValueError("eta given twice: as eta= and in options")
        options["eta"] = eta
    return SamplerSettings(method, steps, start_step, clip_denoised, options)
