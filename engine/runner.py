"""The engine: ΠGDM restores with the one step of :mod:`pgdm.sampler`, run eager, compiled, or as a CUDA graph.

``Engine(denoiser, EngineConfig(...)).restore(y, op, ...)`` returns what ``pgdm.Restorer.restore``
returns (same seeds, same numbers within the precision's tolerance); ``pgdm.engine.restorer(denoiser,
backend="compile")`` is the one-line form. Every backend runs :func:`engine_step_`, which gathers the
step's coefficients from (N,) device tables with a device step counter, draws the step's noise with
the counter-based RNG, calls :func:`pgdm.sampler.pigdm_step`, and writes the next sample into ``x`` in
place. Nothing in it reads a tensor on the host, so it compiles with ``fullgraph=True`` and captures
into one CUDA graph that is replayed for every step.
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from pgdm import schedules
from pgdm.denoiser import Denoiser
from pgdm.interop import accepts_arrays
from pgdm.operators import Inpaint, Operator
from pgdm.rng import gaussian_no_sync
from pgdm.sampler import SamplingPlan, pigdm_step, plan_sampling, summarize_samples

from .batching import RestoreQueue, pad_plan
from .compile import check_inductor_options, compile_step
from .graphs import GraphDispatcher, GraphEntry, GraphKey, StaticBuffers, StepNotCapturable, capture_cuda_graph
from .operators import is_row_independent, load_rows_, operator_signature, slice_operator, static_operator, warm_operator_
from .precision import PRECISIONS, bf16_emulated_on_cpu, precision_context, prepare_denoiser

__all__ = ["BACKENDS", "EngineConfig", "Engine", "restorer", "engine_step_", "gather_step_no_sync"]

BACKENDS = ("eager", "compile", "cudagraph")


@dataclass(frozen=True)
class EngineConfig:
    """Everything an :class:`Engine` is built from.

    Attributes:
        steps, eta, start_step, clip_denoised: the sampler's settings, as for :class:`pgdm.Restorer`.
        backend: ``"eager"`` (debugging; same numbers as ``Restorer``), ``"compile"`` (``torch.compile`` of
            the whole step, CPU or CUDA) or ``"cudagraph"`` (CUDA only: the step, compiled unless
            ``compile=False``, captured in a CUDA graph per :class:`~pgdm.engine.graphs.GraphKey`).
        precision: the network's precision, ``"fp32" | "tf32" | "bf16" | "fp16"``; x̂, h, h† and the update
            stay float32 (``tf32`` only differs from ``fp32`` on CUDA).
        channels_last: run the network's convolutions in NHWC layout.
        batch_sizes: the batch sizes compiled/captured; ``compile`` and ``cudagraph`` pad a batch up to the
            smallest that fits. ``cudagraph`` runs larger batches and keys it cannot capture eagerly.
        compile: ``cudagraph`` only: compile the step before capturing it (False captures the eager step).
        compile_mode: ``torch.compile`` mode; None: ``"default"`` (``max-autotune*`` modes tune every convolution:
            long compiles; with ``cudagraph`` use a mode without Inductor's own CUDA graphs: ``default`` or
            ``max-autotune-no-cudagraphs``).
        compile_options: Inductor settings for the compiled step, e.g. ``{"conv_1x1_as_mm": True,
            "epilogue_fusion": False}`` (names from ``torch._inductor.config``; they override the engine's own).
        copy_model: freeze and cast a deep copy of the denoiser (True), or the caller's network in place (False).
        max_graphs: CUDA graphs kept at most; further keys run eagerly.
        warmup_iters: runs of the step on the capture stream before each capture (≥ 2: the last one runs under
            ``torch.cuda.set_sync_debug_mode("error")``; a step that syncs is not captured and runs eagerly).
    """

    steps: int = 100
    eta: float = 1.0
    start_step: int | None = None
    clip_denoised: bool = True
    backend: str = "eager"
    precision: str = "fp32"
    channels_last: bool = False
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32)
    compile: bool = True
    compile_mode: str | None = None
    compile_options: Mapping[str, object] | None = field(default=None, hash=False)  # a dict: not part of the hash
    copy_model: bool = True
    max_graphs: int = 64
    warmup_iters: int = 2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        sizes = tuple(sorted(set(int(b) for b in self.batch_sizes)))
        if not sizes or sizes[0] < 1:
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "compile_options", check_inductor_options(self.compile_options))
        if self.max_graphs < 0 or self.warmup_iters < 2:
            raise ValueError("max_graphs must be ≥ 0 and warmup_iters ≥ 2")


def gather_step_no_sync(tables: dict[str, torch.Tensor], counter: torch.Tensor) -> dict[str, torch.Tensor]:
    """The current step's 0-d coefficients from (N,) tables, indexed by the 0-d int64 device ``counter``.

    The index wraps modulo N (a no-op within a run) so that replaying a graph past the last step
    (benchmarks) never indexes out of bounds.
    """
    idx = torch.remainder(counter, tables["t"].shape[0]).view(1)
    return {name: v.index_select(0, idx).view(()) for name, v in tables.items()}


def engine_step_(
    denoiser: Denoiser,
    op: Operator,
    x: torch.Tensor,
    counter: torch.Tensor,
    tables: dict[str, torch.Tensor],
    y: torch.Tensor,
    y_pinv: torch.Tensor,
    keys: torch.Tensor,
    sigma_y2: torch.Tensor | None,
    class_labels: torch.Tensor | None,
    clip_denoised: bool = True,
) -> None:
    """One ΠGDM step (Song et al. 2023, Alg. 1) in place: x ← pigdm_step(x, coefficients[counter]); counter += 1.

    x: (B, C, H, W) float32 sample, overwritten; counter: 0-d int64 step index (device); tables: (N,)
    per-step coefficients from :func:`pgdm.sampler.pigdm_coefficients`; y, y_pinv, keys, sigma_y2,
    class_labels: the plan's tensors (:class:`pgdm.sampler.SamplingPlan`); clip_denoised: as for
    :func:`pgdm.sampler.pigdm_step` (a Python bool: compiled and captured steps specialise on it). No host syncs.
    """
    coef = gather_step_no_sync(tables, counter)
    noise = gaussian_no_sync(keys, counter, x.shape[1:], x.dtype)
    x_next, _ = pigdm_step(
        denoiser, x, coef, y, y_pinv, op, noise, sigma_y2=sigma_y2, class_labels=class_labels, clip_denoised=clip_denoised
    )
    x.copy_(x_next)
    counter.add_(1)


def _device_of(denoiser: Denoiser) -> torch.device:
    for p in denoiser.parameters():
        return p.device
    return denoiser.alphas_cumprod.device


class Engine:
    """Restore images with ΠGDM, fast: frozen weights, input-only VJP, compiled step, CUDA graphs, batching.

    ``restore`` has the signature of :meth:`pgdm.Restorer.restore` and returns the same values:
    identical for ``backend="eager"`` in fp32, within Inductor's reordering error
    for ``"compile"``/``"cudagraph"``, within the network precision for bf16/fp16.

    Args:
        denoiser: the ε-prediction model; copied (``config.copy_model``), frozen with
            ``requires_grad_(False)`` and put in eval mode, so the VJP is taken w.r.t. the input only and
            no weight gradient is ever allocated.
        config: :class:`EngineConfig`.

    Example:
        >>> engine = pgdm.engine.restorer(pgdm.load_model("default"), backend="compile", steps=50)
        >>> x = engine.restore(op(clean), op, seed=0)      # (B, 1, 32, 32) in [-1, 1]
    """

    def __init__(self, denoiser: Denoiser, config: EngineConfig | None = None) -> None:
        config = config or EngineConfig()
        schedules.timesteps(config.steps, denoiser.num_timesteps, config.start_step)  # validates steps/start_step
        self.config = config
        self.device = _device_of(denoiser)
        if config.backend == "cudagraph" and self.device.type != "cuda":
            raise ValueError(f"backend 'cudagraph' needs the model on a CUDA device, got {self.device}; use 'compile' or 'eager'")
        if self.device.type == "cpu" and config.precision == "bf16" and bf16_emulated_on_cpu():
            warnings.warn("pgdm.engine: precision 'bf16' on a CPU without AVX512-BF16 or AMX runs slower than 'fp32' here", RuntimeWarning, stacklevel=2)
        self.denoiser = prepare_denoiser(denoiser, config.precision, channels_last=config.channels_last, copy_model=config.copy_model)
        compiled = config.backend == "compile" or (config.backend == "cudagraph" and config.compile)
        self._step: Callable = (
            compile_step(engine_step_, self.device, config.compile_mode, channels_last=config.channels_last, options=config.compile_options)
            if compiled
            else engine_step_
        )
        self._counter = torch.zeros((), dtype=torch.int64, device=self.device)
        self._graphs = GraphDispatcher(config.batch_sizes, config.max_graphs)
        self._buffers = StaticBuffers(self._graphs.max_batch, self.device)
        self._static_ops: dict[tuple, Operator] = {}
        self._uncapturable: set[GraphKey] = set()
        self._pool = self._capture_stream = None
        self.stats: Counter[str] = Counter()  # runs per path: eager, compiled, graph; captures; fallbacks

    @property
    def max_batch(self) -> int:
        """The largest batch size compiled/captured (``max(config.batch_sizes)``)."""
        return self._graphs.max_batch

    # ------------------------------------------------------------------ public API

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
        """Restore x from y = h(x) (+ N(0, σ_y²)); arguments and result as :meth:`pgdm.Restorer.restore`.

        y: (B, …) measurement on the model's device, or any DLPack array (results then come back as its type,
        ``pgdm.interop``). Returns (B, C, H, W) in [-1, 1], or (mean, std).
        callback: called after every step with {"i", "t", "x"} (no "denoised": the step keeps x̂ internal);
        ``x`` is the engine's buffer (padded rows included), valid until the next step.
        """
        plan = self.plan(y, op, sigma_y, seed, class_labels, num_samples=num_samples)
        return summarize_samples(self.run_plan(plan, callback), num_samples, return_std)

    def plan(self, y, op, sigma_y=0.0, seed=0, class_labels=None, *, num_samples: int = 1) -> SamplingPlan:
        """:func:`pgdm.sampler.plan_sampling` with this engine's settings (float32 math; float64 for float64 y)."""
        dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        cfg = self.config
        return plan_sampling(
            self.denoiser, y, op, steps=cfg.steps, eta=cfg.eta, start_step=cfg.start_step, sigma_y=sigma_y,
            seed=seed, class_labels=class_labels, num_samples=num_samples, dtype=dtype, clip_denoised=cfg.clip_denoised,
        )  # fmt: skip

    def queue(self, mode: str = "throughput", max_batch: int | None = None) -> RestoreQueue:
        """A :class:`~pgdm.engine.batching.RestoreQueue` running on this engine."""
        return RestoreQueue(self, mode, max_batch)

    @torch.no_grad()
    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Run every step of ``plan``; returns the final samples (rows, C, H, W), unclamped.

        callback: called after each step with {"i", "t", "x"} (x is the engine's buffer: clone to keep it).
        """
        rows = plan.x_init.shape[0]
        backend = self.config.backend
        with torch.no_grad(), precision_context(self.config.precision, self.device):
            if backend == "eager":
                self.stats["eager"] += 1
                return self._run_direct(plan, engine_step_, plan.op, callback)
            padded = self._graphs.padded_batch(rows)
            run = pad_plan(plan, padded) if padded is not None else None
            if backend == "compile":
                run = run or plan  # no captured size fits: compile this size too
                self.stats["compiled"] += 1
                return self._run_direct(run, self._step, self._static_op(run), callback)[:rows]
            key = None if run is None else self._graph_key(run)
            entry = None if key is None else self._graphs.get(key)
            if entry is None and key is not None and key not in self._uncapturable and not self._graphs.full():
                entry = self._capture(key, run)
            if entry is None:  # larger than every size, an operator that cannot pad, a step that syncs, or the cache is full
                self.stats["eager_fallback"] += 1
                return self._run_direct(plan, engine_step_, plan.op, callback)
            self.stats["graph"] += 1
            return self._replay(entry, run, callback)[:rows].clone()

    @torch.no_grad()
    def warmup(
        self,
        op: Operator,
        image_shape: Sequence[int],
        batch_sizes: Sequence[int] | None = None,
        *,
        sigma_y: float = 0.0,
        class_labels: int | None = None,
    ) -> float:
        """Compile (``compile``) or capture (``cudagraph``) the step for ``op`` on (C, H, W) images ahead of time.

        Runs no sampling loop. Returns the seconds spent (compile/capture time, reported apart from run time).
        A per-image operator (a (B, …) inpainting mask) is warmed with its first image's parameters:
        the graph is the same for every mask of that shape.
        """
        t0 = time.perf_counter()
        if self.config.backend == "eager":
            return 0.0
        if not is_row_independent(op):
            masks = [m.mask.shape[0] for m in op.modules() if isinstance(m, Inpaint) and m.mask.shape[0] > 1]
            op = slice_operator(op, masks[0], 0, 1) if masks else None
            if op is None:
                raise ValueError("warmup needs an operator without per-image parameters (other than inpainting masks)")
        if class_labels is None and self.denoiser.class_cond:
            class_labels = 0
        with precision_context(self.config.precision, self.device):
            for b in batch_sizes or self.config.batch_sizes:
                x = torch.zeros(b, *image_shape, device=self.device)
                plan = self.plan(op(x), op, sigma_y=sigma_y, class_labels=class_labels)
                padded = self._graphs.padded_batch(b) or b
                run = pad_plan(plan, padded) or plan
                if self.config.backend == "compile":
                    x_run = run.x_init.clone()
                    op_run, counter = self._static_op(run), self._counter.zero_()
                    self._step(self.denoiser, op_run, x_run, counter, run.coefs, run.y, run.y_pinv, run.keys, run.sigma_y2, run.class_labels, run.clip_denoised)
                elif self._graphs.get(key := self._graph_key(run)) is None and key not in self._uncapturable and not self._graphs.full():
                    self._capture(key, run)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def prepare_step(self, plan: SamplingPlan) -> Callable[[], None]:
        """A zero-argument callable running one step of ``plan`` on this engine's path, for benchmarks.

        Compiles or captures now (padding ``plan`` like :meth:`run_plan`). Every call restarts from
        ``plan.x_init`` (one device copy) so repeated calls time the same work; the step counter runs on
        and wraps modulo N. No host syncs: synchronise before reading the clock.
        """
        rows = plan.x_init.shape[0]
        padded = self._graphs.padded_batch(rows)
        run = (pad_plan(plan, padded) if padded is not None else None) or plan
        den, counter, backend = self.denoiser, self._counter, self.config.backend
        with torch.no_grad(), precision_context(self.config.precision, self.device):
            if backend == "cudagraph":
                key = self._graph_key(run)
                entry = self._graphs.get(key) or (None if key in self._uncapturable else self._capture(key, run))
                if entry is None:
                    raise RuntimeError(f"this step cannot be captured (see the warning); stats: {dict(self.stats)}")
                self._load(entry, run)
                x0, graph = run.x_init, entry.graph

                def replay() -> None:
                    entry.inputs["x"].copy_(x0)
                    graph.replay()

                return replay
            step = self._step if backend == "compile" else engine_step_
            op = self._static_op(run) if backend == "compile" else run.op
            x = run.x_init.clone()

            def direct() -> None:
                with torch.no_grad(), precision_context(self.config.precision, self.device):
                    x.copy_(run.x_init)
                    step(den, op, x, counter, run.coefs, run.y, run.y_pinv, run.keys, run.sigma_y2, run.class_labels, run.clip_denoised)

            direct()  # compiles on the first call
            return direct

    # ------------------------------------------------------------------ internals

    def _run_direct(self, plan: SamplingPlan, step: Callable, op: Operator, callback) -> torch.Tensor:
        """The host loop over steps, no graph: ``step`` is the eager or the compiled :func:`engine_step_`."""
        x = plan.x_init.clone()  # (rows, C, H, W), updated in place by every step
        counter = self._counter.zero_()
        for i in range(plan.coefs["t"].shape[0]):
            step(self.denoiser, op, x, counter, plan.coefs, plan.y, plan.y_pinv, plan.keys, plan.sigma_y2, plan.class_labels, plan.clip_denoised)
            if callback is not None:
                callback({"i": i, "t": plan.coefs["t"][i], "x": x})
        return x

    def _static_op(self, plan: SamplingPlan) -> Operator:
        """The one operator instance the compiled step sees for this (signature, rows), loaded with ``plan.op``'s rows.

        Reusing one instance per key keeps dynamo from recompiling for every new but equal operator object.
        """
        rows = plan.x_init.shape[0]
        key = (operator_signature(plan.op), rows)
        op = self._static_ops.get(key)
        if op is None:
            op = self._static_ops[key] = static_operator(plan.op, rows)
            load_rows_(op, plan.op, rows)
            warm_operator_(op, plan.x_init, plan.y, plan.sigma_y2 is not None)
        else:
            load_rows_(op, plan.op, rows)
        return op

    def _graph_key(self, plan: SamplingPlan) -> GraphKey:
        b, c, h, w = plan.x_init.shape
        return GraphKey(b, c, h, w, plan.x_init.dtype, operator_signature(plan.op), plan.sigma_y2 is not None, plan.class_labels is not None, plan.clip_denoised)

    def _capture(self, key: GraphKey, plan: SamplingPlan) -> GraphEntry | None:
        """Allocate the key's static views, load ``plan`` into them, warm the operator, capture the step.

        Returns None (and remembers the key, which then runs eagerly) when the step syncs with the host.
        """
        b, buf = key.batch, self._buffers

        def rows(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else buf.rows(name, b, t.shape[1:], t.dtype)

        inputs = {
            "x": rows("x", plan.x_init),
            "y": rows("y", plan.y),
            "y_pinv": rows("y_pinv", plan.y_pinv),
            "keys": rows("keys", plan.keys),
            "sigma_y2": rows("sigma_y2", plan.sigma_y2),
            "class_labels": rows("class_labels", plan.class_labels),
        }
        tables = {name: buf.table(name, v) for name, v in plan.coefs.items()}
        entry = GraphEntry(op=static_operator(plan.op, b), inputs=inputs, tables=tables)
        self._load(entry, plan)
        warm_operator_(entry.op, inputs["x"], inputs["y"], key.noisy)
        den, op, counter = self.denoiser, entry.op, self._counter

        def step() -> None:
            self._step(den, op, inputs["x"], counter, tables, inputs["y"], inputs["y_pinv"], inputs["keys"], inputs["sigma_y2"], inputs["class_labels"], key.clip_denoised)

        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
            self._capture_stream = torch.cuda.Stream(device=self.device)
        try:
            with torch.cuda.device(self.device):
                entry.graph = capture_cuda_graph(step, stream=self._capture_stream, pool=self._pool, warmup_iters=self.config.warmup_iters)
        except StepNotCapturable as e:
            self._uncapturable.add(key)
            self.stats["uncapturable"] += 1
            warnings.warn(f"pgdm.engine: running {key.operator!r} batches of {key.batch} eagerly: {e}", RuntimeWarning, stacklevel=3)
            return None
        self._graphs.add(key, entry)
        self.stats["captures"] += 1
        return entry

    def _load(self, entry: GraphEntry, plan: SamplingPlan) -> None:
        """Copy a (padded) plan into the entry's static tensors and reset the step counter (device copies only)."""
        sources = {
            "x": plan.x_init, "y": plan.y, "y_pinv": plan.y_pinv, "keys": plan.keys,
            "sigma_y2": plan.sigma_y2, "class_labels": plan.class_labels,
        }  # fmt: skip
        for name, dst in entry.inputs.items():
            if dst is not None:
                dst.copy_(sources[name])
        for name, dst in entry.tables.items():
            dst.copy_(plan.coefs[name])
        load_rows_(entry.op, plan.op, entry.inputs["x"].shape[0])
        self._counter.zero_()

    def _replay(self, entry: GraphEntry, plan: SamplingPlan, callback) -> torch.Tensor:
        self._load(entry, plan)  # capture's warm-up runs changed the buffers: always load right before replaying
        x = entry.inputs["x"]
        for i in range(plan.coefs["t"].shape[0]):
            entry.graph.replay()
            if callback is not None:
                callback({"i": i, "t": plan.coefs["t"][i], "x": x})
        entry.runs += 1
        return x


def restorer(denoiser: Denoiser, backend: str = "eager", **kwargs) -> Engine:
    """``Engine(denoiser, EngineConfig(backend=backend, **kwargs))``: switch backends with one argument."""
    return Engine(denoiser, EngineConfig(backend=backend, **kwargs))
