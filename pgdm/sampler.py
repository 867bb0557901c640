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
from .canvas import canvas_denoiser
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
    "end_on_measurement",
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
        start_step: start from h†(y) noised to this timestep instead of pure noise (SDEdit/CCDF, ΠGDM App. B.1);
            None: the method's default (:meth:`start_for`).
        clip_denoised: clamp x̂ to [-1, 1] inside each step (see :func:`pgdm.methods.pigdm.pigdm_step`).
        options: the method's options over its defaults (e.g. ``{"eta": 0.5}``, ``{"weight": 2.0}``), stored
            as sorted (name, value) pairs with every default filled in.
        end_on_measurement: after the last step, replace the measured component of the noiseless rows of a
            linear operator by h†(y): x ← x + h†(y) − h†(h(x)), so h(x) = y up to rounding (:func:`end_on_measurement`).
            Noisy rows and non-linear operators are left as sampled. False: the literal algorithm.
    """

    method: str = "pigdm"
    steps: int = 100
    start_step: int | None = None
    clip_denoised: bool = True
    options: Mapping[str, float | None] | tuple = ()
    end_on_measurement: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.end_on_measurement, bool):
            raise ValueError(f"end_on_measurement must be True or False, got {self.end_on_measurement!r}")
        m = get_method(self.method)
        object.__setattr__(self, "method", m.name)
        opts = m.options(dict(self.options))
        m.coefficients(schedules.linear(2), torch.tensor([1, 0]), **m.resolve(opts, None, self.steps))  # checks the values (one-line errors)
        object.__setattr__(self, "options", tuple(sorted(opts.items())))

    @property
    def spec(self) -> Method:
        """The :class:`~pgdm.methods.Method` record."""
        return get_method(self.method)

    def start_for(self, T: int) -> int | None:
        """The start step for a model with T timesteps: ``start_step``, else the method's default start (C-ΠGDM's:
        0.4 T up to 5 steps, 0.6 T beyond), else None (pure noise at T − 1)."""
        return self.start_step if self.start_step is not None else self.spec.default_start(T, self.steps)

    def check_model(self, denoiser: Denoiser) -> None:
        """Raise a one-line ValueError when ``denoiser`` is not a :class:`~pgdm.Denoiser` or ``steps``/``start_step``
        do not fit the model's T."""
        check_denoiser(denoiser)
        schedules.timesteps(self.steps, denoiser.num_timesteps, self.start_for(denoiser.num_timesteps))

    def method_options(self, op: Operator | None = None) -> dict[str, float | None]:
        """The method's options for ``op`` at these steps: per-task settings fill the options left at None."""
        return self.spec.resolve(dict(self.options), op, self.steps)

    def coefficients(self, alphas_cumprod: torch.Tensor, op: Operator | None = None) -> dict[str, torch.Tensor]:
        """The method's (N,) float64 per-step table for this schedule (and ``op``, for per-task settings)."""
        ts = schedules.timesteps(self.steps, alphas_cumprod.numel(), self.start_for(alphas_cumprod.numel()))
        return self.spec.coefficients(alphas_cumprod.cpu(), ts, **self.method_options(op))


def check_denoiser(denoiser: object) -> None:
    """A one-line :class:`~pgdm.validate.ArgumentTypeError` unless ``denoiser`` is a :class:`~pgdm.Denoiser`."""
    if isinstance(denoiser, Denoiser):
        return
    hint = " (wrap a bare network: pgdm.Denoiser(net, alphas_cumprod))" if isinstance(denoiser, torch.nn.Module) else ""
    raise validate.ArgumentTypeError(
        f"denoiser must be a pgdm.Denoiser, e.g. pgdm.load_model('default'){hint}, got {type(denoiser).__name__}"
    )


def _check_operator(op: object) -> None:
    if not isinstance(op, Operator):
        raise validate.ArgumentTypeError(
            f"op must be a measurement operator, e.g. pgdm.ops.parse('sr4', (C, H, W)) or pgdm.ops.SuperResolution(4), got {type(op).__name__}"
        )


def _sigma_tensor(sigma_y: object) -> torch.Tensor:
    """σ_y as a float64 tensor; strings, bools and non-numbers raise a one-line ArgumentTypeError."""
    bad = isinstance(sigma_y, (str, bytes, bool)) or (
        isinstance(sigma_y, (list, tuple)) and any(isinstance(s, (str, bytes, bool)) for s in sigma_y)
    )
    if not bad:
        try:
            return torch.as_tensor(sigma_y, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            pass
    raise validate.ArgumentTypeError(
        f"sigma_y must be a number ≥ 0 on the [0, 1] pixel scale (e.g. 0.05) or one per image, got {type(sigma_y).__name__} {sigma_y!r}"
    )


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
    end_on_measurement: bool = False  # end the noiseless rows on h(x) = y after the loop (linear operators only)

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
    check_denoiser(denoiser)
    _check_operator(op)
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
    sigma = _sigma_tensor(sigma_y)
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
    if settings.start_for(denoiser.alphas_cumprod.numel()) is None:
        x_init = z
    else:  # SDEdit/CCDF start from h†(y) noised to ᾱ at start_step (ΠGDM App. B.1)
        a = coefs64["alpha_t"][0]
        x_init = float(a.sqrt()) * y_pinv + float((1 - a).sqrt()) * z
    end_on_y = settings.end_on_measurement and op.linear
    return SamplingPlan(y_k, y_pinv, op_k, keys, coefs, sigma_y2, labels_k, x_init, k, settings.clip_denoised, method.name, end_on_y)


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
        del noise, x0  # one step's tensors are not held through the next step (a canvas-sized pair each)
    return x


def end_on_measurement(plan: SamplingPlan, x: torch.Tensor) -> torch.Tensor:
    """The final samples x: (rows, C, H, W) ended on the measurement, where the plan asks for it.

    For the noiseless rows of a linear operator: x ← x + h†(y) − h†(h(x)), which replaces the measured component
    of x by h†(y) (so h(x) = y up to float rounding) and keeps what the sampler produced in h's null space. ΠGDM's
    last steps leave a small measurement residual (a noiseless 9×9 deblur ends at 52–56 dB where h†(y) is at 103 dB;
    ended on y, 99.5 dB); this removes it at the cost of one h and two h†. Rows with σ_y > 0 are left as sampled: projecting would copy the
    noise into the result. Runs once after the loop, never in a step; no host sync.
    """
    if not plan.end_on_measurement:
        return x
    y_pinv = plan.y_pinv.to(x.dtype)
    ended = x + y_pinv - plan.op.project(x)
    if plan.sigma_y2 is None:
        return ended
    noiseless = (plan.sigma_y2 == 0).view(-1, *([1] * (x.ndim - 1)))  # (rows, 1, 1, 1)
    return torch.where(noiseless, ended, x)


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
        return summarize_samples(end_on_measurement(plan, self.run_plan(plan, callback)), num_samples, return_std)


class Restorer(RestoreInterface):
    """Restore images with any method of :mod:`pgdm.methods` (ΠGDM by default) from any measurement operator.

    Args:
        denoiser: the ε-prediction model (``pgdm.Denoiser`` / ``pgdm.load_model``).
        steps: number of sampling steps N, uniformly spaced from ``start_step`` (default T−1) to 0.
        eta: DDIM η ∈ [0, 1] for the methods that have one; None: the method's default (ΠGDM: 1.0).
        start_step: start from h†(y) noised to this timestep instead of pure noise (SDEdit/CCDF, App. B.1;
            the paper uses 500 of 1000 for SR×4 and 100 for deblurring).
        clip_denoised: clamp x̂ to [-1, 1] inside each step; False is the literal algorithm.
        end_on_measurement: end the noiseless rows of a linear operator on h(x) = y after the last step
            (:func:`end_on_measurement`); False is the literal algorithm.
        method: ``"pigdm"``, ``"rg"``, ``"dps"``, ``"ddnm"``, ``"ddnm+"``, ``"diffpir"``, ``"ddrm"`` or ``"cpigdm"`` (docs/methods.md).
        options: the method's other options, e.g. ``{"weight": 2.0}`` (fixed ΠGDM weight), ``{"scale": 0.5}`` (DPS ζ').
        strategy: how a model trained at one size restores images of another (:mod:`pgdm.canvas`, docs/large-images.md):
            ``"auto"`` (default: ``tiles`` for a model with an ``image_size``), ``"tiles"``, ``"whole"``, or None
            (the model's own size only: other sizes are refused). Images of the model's size go straight to the
            network whatever the strategy. A :class:`~pgdm.canvas.CanvasDenoiser` passed as ``denoiser`` is used
            as it is.
        tile, overlap: the tile side (default: the model's size) and the pixels neighbouring tiles share (default:
            tile // 4) for ``tiles``.

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
        strategy: str | None = "auto",
        tile: int | None = None,
        overlap: int | None = None,
        end_on_measurement: bool = True,
    ) -> None:
        self.settings = settings_from(method, steps, eta, start_step, clip_denoised, options, end_on_measurement=end_on_measurement)
        self.settings.check_model(denoiser)
        self.denoiser = canvas_denoiser(denoiser, strategy, tile=tile, overlap=overlap)

    @property
    def steps(self) -> int:
        return self.settings.steps

    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        return run_eager(self.denoiser, plan, callback)


def settings_from(
    method: str,
    steps: int,
    eta: float | None,
    start_step: int | None,
    clip_denoised: bool,
    options: Mapping[str, float | None] | None,
    *,
    end_on_measurement: bool = True,
) -> SamplerSettings:
    """:class:`SamplerSettings` from the flat arguments ``Restorer`` and ``EngineConfig`` take (``eta`` joins the options)."""
    options = dict(options or {})
    if eta is not None:
        if "eta" in options:
            raise ValueError("eta given twice: as eta= and in options")
        options["eta"] = eta
    return SamplerSettings(method, steps, start_step, clip_denoised, options, end_on_measurement)
