"""The engine: every method of :mod:`pgdm.methods`, run eager, compiled, or as a CUDA graph, through one plan → loop.

``Engine(denoiser, EngineConfig(...)).restore(y, op, ...)`` returns what ``pgdm.Restorer.restore``
returns (same seeds, same numbers within the precision's tolerance); ``pgdm.engine.restorer(denoiser,
backend="compile", method="ddnm")`` is the one-line form. Every backend runs :func:`engine_step_`, which
gathers the step's coefficients from (N,) device tables with a device step counter, draws the step's
noise with the counter-based RNG, calls the method's step, and writes the next sample into ``x`` in
place. Nothing in it reads a tensor on the host, so it compiles with ``fullgraph=True`` and captures
into one CUDA graph that is replayed for every step. :meth:`Engine._prepare` is the one place that
pads a plan, picks the path (eager, compiled, graph, eager fallback) and compiles or captures.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from pgdm.denoiser import Denoiser
from pgdm.methods import pigdm_step
from pgdm.operators import Operator
from pgdm.rng import gaussian_no_sync
from pgdm.sampler import RestoreInterface, SamplerSettings, SamplingPlan, settings_from

from .autotune import AUTO, AutoRouter, AutoTuner, Candidate, candidates
from .batching import RestoreQueue, pad_plan
from .compile import check_inductor_options, compile_step
from .graphs import GraphDispatcher, GraphEntry, GraphKey, StaticBuffers, StepNotCapturable, capture_cuda_graph
from .onnx_steps import OnnxSteps
from .options import BACKENDS, PRECISIONS
from .precision import bf16_emulated_on_cpu, precision_context, prepare_denoiser

__all__ = ["BACKENDS", "EngineConfig", "Engine", "restorer", "engine_step_", "gather_step_no_sync"]


@dataclass(frozen=True)
class EngineConfig:
    """Everything an :class:`Engine` is built from.

    Attributes:
        method, steps, eta, start_step, clip_denoised, method_options, end_on_measurement: the sampler's settings, as for
            :class:`pgdm.Restorer` (validated once, into ``sampler``, a :class:`pgdm.sampler.SamplerSettings`).
        backend: ``"auto"`` (the default: the fastest of the others on this device, measured per operator and batch
            size, :mod:`pgdm.engine.autotune`), ``"eager"`` (debugging; same numbers as ``Restorer``), ``"compile"``
            (``torch.compile`` of the whole step, CPU or CUDA), ``"cudagraph"`` (CUDA only: the step, compiled
            unless ``compile=False``, captured in a CUDA graph per :class:`~pgdm.engine.graphs.GraphKey`) or
            ``"onnx"`` (CPU only, float32: the step exported to ONNX once per operator and batch size, the file kept
            in the cache folder, and run by ONNX Runtime; operators with per-image parameters cannot be exported).
        precision: the network's precision, ``"auto"`` (the default: the fastest precision the hardware computes
            natively, measured; never an emulated bf16), ``"fp32" | "tf32" | "bf16" | "fp16"``; x̂, h, h† and the
            update stay float32 (``tf32`` only differs from ``fp32`` on CUDA).
        channels_last: run the network's convolutions in NHWC layout; None (the default): measured with ``"auto"``,
            False otherwise.
        autotune_budget_s: seconds ``"auto"`` may spend measuring per (operator, batch size), compiles included;
            None: ``$PGDM_AUTOTUNE_BUDGET_S`` or 600; 0: no measuring (eager, NCHW, the widest precision asked).
        batch_sizes: the batch sizes compiled/captured; ``compile`` and ``cudagraph`` pad a batch up to the
            smallest that fits. ``cudagraph`` runs larger batches and keys it cannot capture eagerly.
        compile: ``cudagraph`` only: compile the step before capturing it (False captures the eager step).
        compile_mode: ``torch.compile`` mode; None: ``"default"`` (``max-autotune*`` modes tune every convolution:
            long compiles; with ``cudagraph`` use a mode without Inductor's own CUDA graphs: ``default`` or
            ``max-autotune-no-cudagraphs``).
        compile_options: Inductor settings for the compiled step, e.g. ``{"conv_1x1_as_mm": True,
            "epilogue_fusion": False}`` (names from ``torch._inductor.config``; they override the engine's own).
        copy_model: freeze and cast a deep copy of the denoiser (True), or the caller's network in place (False; fixed
            configurations only: ``"auto"`` measures each candidate on its own copy).
        max_graphs: CUDA graphs kept at most; further keys run eagerly.
        warmup_iters: runs of the step on the capture stream before each capture (≥ 2: the last one runs under
            ``torch.cuda.set_sync_debug_mode("error")``; a step that syncs is not captured and runs eagerly).
    """

    steps: int = 100
    eta: float | None = None
    start_step: int | None = None
    clip_denoised: bool = True
    backend: str = AUTO
    precision: str = AUTO
    channels_last: bool | None = None
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32)
    compile: bool = True
    compile_mode: str | None = None
    compile_options: Mapping[str, object] | None = field(default=None, hash=False)  # a dict: not part of the hash
    copy_model: bool = True
    max_graphs: int = 64
    warmup_iters: int = 2
    method: str = "pigdm"
    method_options: Mapping[str, float | None] | None = field(default=None, hash=False)
    autotune_budget_s: float | None = None
    end_on_measurement: bool = True
    sampler: SamplerSettings = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.precision != AUTO and self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {AUTO}, {', '.join(PRECISIONS)}")
        if self.backend == "onnx" and (self.precision not in (AUTO, "fp32") or self.channels_last):
            raise ValueError(f"backend 'onnx' runs the float32 NCHW step; got precision={self.precision!r}, channels_last={self.channels_last}")
        if self.autotune_budget_s is not None and not self.autotune_budget_s >= 0:
            raise ValueError(f"autotune_budget_s must be ≥ 0 seconds or None, got {self.autotune_budget_s}")
        if not self.auto and self.channels_last is None:
            object.__setattr__(self, "channels_last", False)
        object.__setattr__(self, "sampler", settings_from(
            self.method, self.steps, self.eta, self.start_step, self.clip_denoised, self.method_options, end_on_measurement=self.end_on_measurement
        ))
        sizes = tuple(sorted(set(int(b) for b in self.batch_sizes)))
        if not sizes or sizes[0] < 1:
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "compile_options", check_inductor_options(self.compile_options))
        if self.max_graphs < 0 or self.warmup_iters < 2:
            raise ValueError("max_graphs must be ≥ 0 and warmup_iters ≥ 2")

    @property
    def auto(self) -> bool:
        """Whether the backend or the precision is chosen by measuring (``"auto"``)."""
        return self.backend == AUTO or self.precision == AUTO

    def fixed(self, candidate: Candidate) -> "EngineConfig":
        """This config with ``candidate``'s backend, precision and layout in place of the ``"auto"`` settings."""
        return dataclasses.replace(
            self, backend=candidate.backend, precision=candidate.precision, channels_last=candidate.channels_last, compile=candidate.compile
        )


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
    step: Callable = pigdm_step,
) -> None:
    """One step of a method in place: x ← step(x, coefficients[counter]); counter += 1.

    x: (B, C, H, W) float32 sample, overwritten; counter: 0-d int64 step index (device); tables: (N,)
    per-step coefficients of the method (:meth:`pgdm.sampler.SamplerSettings.coefficients`); y, y_pinv, keys,
    sigma_y2, class_labels: the plan's tensors (:class:`pgdm.sampler.SamplingPlan`); clip_denoised: a Python
    bool (compiled and captured steps specialise on it); step: the method's step function (default ΠGDM,
    :func:`pgdm.methods.pigdm_step`). No host syncs.
    """
    coef = gather_step_no_sync(tables, counter)
    noise = gaussian_no_sync(keys, counter, x.shape[1:], x.dtype)
    x_next, _ = step(denoiser, x, coef, y, y_pinv, op, noise, sigma_y2=sigma_y2, class_labels=class_labels, clip_denoised=clip_denoised)
    x.copy_(x_next)
    counter.add_(1)


def _device_of(denoiser: Denoiser) -> torch.device:
    for p in denoiser.parameters():
        return p.device
    return denoiser.alphas_cumprod.device


@dataclass
class _Prepared:
    """A plan made ready to run on one path: ``start()`` loads it and returns the sample buffer, ``step()`` runs one step.

    path: "eager", "compiled", "graph" or "eager_fallback" (the key of ``Engine.stats`` a run counts under).
    """

    path: str
    plan: SamplingPlan  # the (padded) plan this path runs
    start: Callable[[], torch.Tensor]
    reset_x: Callable[[], None]
    step: Callable[[], None]
    copy_out: bool  # the buffer is a graph's static memory: clone results


class Engine(RestoreInterface):
    """Restore images with any method, fast: frozen weights, input-only VJP, compiled step, CUDA graphs, batching.

    ``restore`` is :meth:`pgdm.sampler.RestoreInterface.restore` (``pgdm.Restorer``'s) and returns the same
    values: identical for ``backend="eager"`` in fp32, within Inductor's reordering error for
    ``"compile"``/``"cudagraph"``, within the network precision for bf16/fp16. Its callback gets {"i", "t", "x"}
    (``x`` is the engine's buffer, padded rows included, valid until the next step).

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
        config.sampler.check_model(denoiser)
        self.config, self.settings = config, config.sampler
        self.device = _device_of(denoiser)
        self._auto: AutoRouter | None = None
        if config.auto:  # fixed-configuration engines are built per chosen candidate (AutoRouter)
            options = candidates(self.device, config.backend, config.precision, config.channels_last, compile=config.compile)
            # the candidates belong to the key: installing ONNX Runtime (a new candidate) measures again
            setting = f"{config.backend}/{config.precision}/{config.channels_last}/{config.compile_mode}/{sorted(config.compile_options.items())}/{[c.label() for c in options]}"
            tuner = AutoTuner(self.device, config.autotune_budget_s)
            # each candidate casts its own copy: an in-place cast (copy_model=False) would change the others' weights
            self._auto = AutoRouter(denoiser, options, setting, tuner, lambda c: Engine(denoiser, dataclasses.replace(config.fixed(c), copy_model=True)))
        if config.backend == "cudagraph" and self.device.type != "cuda":
            raise ValueError(f"backend 'cudagraph' needs the model on a CUDA device, got {self.device}; use 'compile' or 'eager'")
        if config.backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"backend 'onnx' runs on the CPU, the model is on {self.device}; use 'cudagraph', 'compile' or 'eager'")
        if self.device.type == "cpu" and config.precision == "bf16" and bf16_emulated_on_cpu():
            warnings.warn("pgdm.engine: precision 'bf16' on a CPU without AVX512-BF16 or AMX runs slower than 'fp32' here", RuntimeWarning, stacklevel=2)
        self.denoiser = (
            denoiser if self._auto else prepare_denoiser(denoiser, config.precision, channels_last=config.channels_last, copy_model=config.copy_model)
        )
        compiled = not self._auto and (config.backend == "compile" or (config.backend == "cudagraph" and config.compile))
        self._step: Callable = (
            compile_step(engine_step_, self.device, config.compile_mode, channels_last=config.channels_last, options=config.compile_options)
            if compiled
            else engine_step_
        )
        self._method_step = self.settings.spec.step
        self._onnx = OnnxSteps(self.denoiser, self.settings, torch.get_num_threads()) if config.backend == "onnx" and not self._auto else None
        self._counter = torch.zeros((), dtype=torch.int64, device=self.device)
        self._graphs = GraphDispatcher(config.batch_sizes, config.max_graphs)
        self._buffers = StaticBuffers(self._graphs.max_batch, self.device)
        self._static_ops: dict[tuple, Operator] = {}
        self._uncapturable: set[GraphKey] = set()
        self._pool = self._capture_stream = None
        self.stats: Counter[str] = Counter()  # runs per path: eager, compiled, graph, eager_fallback; captures

    @property
    def tuner(self) -> AutoTuner | None:
        """The :class:`~pgdm.engine.autotune.AutoTuner` of an ``"auto"`` engine (its ``choices``, ``timer``,
        ``budget_s``), or None for a fixed configuration."""
        return None if self._auto is None else self._auto.tuner

    @property
    def max_batch(self) -> int:
        """The largest batch size compiled/captured (``max(config.batch_sizes)``)."""
        return self._graphs.max_batch

    # ------------------------------------------------------------------ public API

    def queue(self, mode: str = "throughput", max_batch: int | None = None) -> RestoreQueue:
        """A :class:`~pgdm.engine.batching.RestoreQueue` running on this engine."""
        return RestoreQueue(self, mode, max_batch)

    @torch.no_grad()
    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Run every step of ``plan``; returns the final samples (rows, C, H, W), unclamped.

        callback: called after each step with {"i", "t", "x"} (x is the engine's buffer: clone to keep it).
        """
        rows = plan.rows
        with torch.no_grad(), precision_context(self.config.precision, self.device):
            prepared = self._prepare(plan, strict=False)
            self.stats[prepared.path] += 1
            x = prepared.start()
            for i in range(plan.coefs["t"].shape[0]):
                prepared.step()
                if callback is not None:
                    callback({"i": i, "t": plan.coefs["t"][i], "x": x})
        return x[:rows].clone() if prepared.copy_out else x[:rows]

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
        the graph is the same for every per-row value of that shape.
        """
        t0 = time.perf_counter()
        if self.config.backend == "eager" and not self._auto:
            return 0.0
        if not op.is_row_independent():
            op = op.slice_rows(op.row_count(), 0, 1)
            if op is None:
                raise ValueError("warmup needs an operator without per-image parameters (other than declared per-row buffers such as inpainting masks)")
        if class_labels is None and self.denoiser.class_cond:
            class_labels = 0
        with precision_context(self.config.precision, self.device):
            for b in batch_sizes or self.config.batch_sizes:
                x = torch.zeros(b, *image_shape, device=self.device)
                prepared = self._prepare(self.plan(op(x), op, sigma_y=sigma_y, class_labels=class_labels), strict=False)
                if prepared.path in ("compiled", "onnx"):
                    prepared.start()
                    prepared.step()  # compiles on the first call
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def prepare_step(self, plan: SamplingPlan) -> Callable[[], None]:
        """A zero-argument callable running one step of ``plan`` on this engine's path, for benchmarks.

        Compiles or captures now (padding ``plan`` like :meth:`run_plan`). Every call restarts from
        ``plan.x_init`` (one device copy) so repeated calls time the same work; the step counter runs on
        and wraps modulo N. No host syncs: synchronise before reading the clock.
        """
        with torch.no_grad(), precision_context(self.config.precision, self.device):
            prepared = self._prepare(plan, strict=True)
            prepared.start()

        def one_step() -> None:
            with torch.no_grad(), precision_context(self.config.precision, self.device):
                prepared.reset_x()
                prepared.step()

        one_step()  # compiles on the first call
        return one_step

    # ------------------------------------------------------------------ internals

    def _prepare(self, plan: SamplingPlan, strict: bool) -> _Prepared:
        """The one place that pads ``plan``, picks its path and compiles (lazily, on the first step) or captures.

        ``strict``: raise instead of falling back to eager when ``cudagraph`` cannot capture the plan.
        ``"auto"``: the engine of the configuration chosen for this plan's operator and batch size prepares it.
        """
        if self._auto is not None:
            return self._prepare_auto(plan, strict)
        backend = self.config.backend
        if backend == "eager":
            return self._direct("eager", plan, engine_step_, plan.op)
        padded = self._graphs.padded_batch(plan.rows)
        run = pad_plan(plan, padded) if padded is not None else None
        if backend == "compile":
            run = run or plan  # no captured size fits (or the operator cannot pad): compile this size too
            return self._direct("compiled", run, self._step, self._static_op(run))
        if backend == "onnx":
            return self._exported(run or plan)
        key = None if run is None else self._graph_key(run)
        entry = None if key is None else self._graphs.get(key)
        if entry is None and key is not None and key not in self._uncapturable and not self._graphs.full():
            entry = self._capture(key, run)
        if entry is None:  # larger than every size, an operator that cannot pad, a step that syncs, or the cache is full
            if strict:
                raise RuntimeError(f"this step cannot be captured (see the warning); stats: {dict(self.stats)}")
            return self._direct("eager_fallback", plan, engine_step_, plan.op)
        x = entry.inputs["x_init"]

        def start() -> torch.Tensor:
            self._load(entry, run)  # capture's warm-up runs changed the buffers: always load right before replaying
            entry.runs += 1
            return x

        return _Prepared("graph", run, start, lambda: x.copy_(run.x_init), entry.graph.replay, copy_out=True)

    def _prepare_auto(self, plan: SamplingPlan, strict: bool) -> _Prepared:
        rows = plan.x_init.shape[0]
        engine = self._auto.engine_for(plan, self._graphs.padded_batch(rows) or rows)
        prepared = engine._prepare(plan, strict)
        if self.device.type != "cuda":
            return prepared
        step, precision = prepared.step, engine.config.precision

        def step_in_precision() -> None:  # the chosen engine's TF32/IEEE setting (run_plan's is "auto": unchanged)
            with precision_context(precision, self.device):
                step()

        return dataclasses.replace(prepared, step=step_in_precision)

    def _direct(self, path: str, run: SamplingPlan, step: Callable, op: Operator) -> _Prepared:
        """The host loop's path without a graph: ``step`` is the eager or the compiled :func:`engine_step_`."""
        x = run.x_init.clone()  # (rows, C, H, W), updated in place by every step
        counter, den, method_step = self._counter, self.denoiser, self._method_step

        def start() -> torch.Tensor:
            x.copy_(run.x_init)
            counter.zero_()
            return x

        def one() -> None:
            step(den, op, x, counter, run.coefs, run.y, run.y_pinv, run.keys, run.sigma_y2, run.class_labels, run.clip_denoised, method_step)

        return _Prepared(path, run, start, lambda: x.copy_(run.x_init), one, copy_out=False)

    def _exported(self, run: SamplingPlan) -> _Prepared:
        """The ``"onnx"`` path: ONNX Runtime runs the exported step of ``run``'s key (exported or loaded now)."""
        runner = self._onnx.runner_for(run)
        fixed, n = runner.plan_inputs(run), run.coefs["t"].shape[0]
        x, step_index = run.x_init.clone(), [0]

        def start() -> torch.Tensor:
            x.copy_(run.x_init)
            step_index[0] = 0
            return x

        def one() -> None:  # the step index wraps modulo N, as the device counter of the other paths does
            (x_next,) = runner.session.run(["x_next"], runner.step_feed(run, x, step_index[0] % n, fixed))
            x.copy_(torch.from_numpy(x_next))
            step_index[0] += 1

        return _Prepared("onnx", run, start, lambda: x.copy_(run.x_init), one, copy_out=False)

    def _static_op(self, plan: SamplingPlan) -> Operator:
        """The one operator instance the compiled step sees for this (signature, rows), loaded with ``plan.op``'s rows.

        Reusing one instance per key keeps dynamo from recompiling for every new but equal operator object.
        """
        rows = plan.rows
        key = (plan.op.signature(), rows)
        op = self._static_ops.get(key)
        if op is None:
            op = self._static_ops[key] = plan.op.static_copy(rows)
            op.load_rows_(plan.op, rows)
            op.warm_(plan.x_init, plan.y, plan.sigma_y2 is not None)
        else:
            op.load_rows_(plan.op, rows)
        return op

    def _graph_key(self, plan: SamplingPlan) -> GraphKey:
        b, c, h, w = plan.x_init.shape
        return GraphKey(b, c, h, w, plan.x_init.dtype, plan.op.signature(), plan.sigma_y2 is not None, plan.class_labels is not None, plan.clip_denoised)

    def _capture(self, key: GraphKey, plan: SamplingPlan) -> GraphEntry | None:
        """Allocate the key's static views, load ``plan`` into them, warm the operator, capture the step.

        Returns None (and remembers the key, which then runs eagerly) when the step syncs with the host.
        """
        b, buf = key.batch, self._buffers

        def rows(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else buf.rows(name, b, t.shape[1:], t.dtype)

        inputs = {name: rows(name, t) for name, t in plan.row_tensors().items()}  # "x_init" is the sample, updated in place
        tables = {name: buf.table(name, v) for name, v in plan.coefs.items()}
        entry = GraphEntry(op=plan.op.static_copy(b), inputs=inputs, tables=tables)
        self._load(entry, plan)
        entry.op.warm_(inputs["x_init"], inputs["y"], key.noisy)
        den, op, counter, method_step = self.denoiser, entry.op, self._counter, self._method_step

        def step() -> None:
            self._step(den, op, inputs["x_init"], counter, tables, inputs["y"], inputs["y_pinv"], inputs["keys"], inputs["sigma_y2"], inputs["class_labels"], key.clip_denoised, method_step)

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
        sources = plan.row_tensors()
        for name, dst in entry.inputs.items():
            if dst is not None:
                dst.copy_(sources[name])
        for name, dst in entry.tables.items():
            dst.copy_(plan.coefs[name])
        entry.op.load_rows_(plan.op, entry.inputs["x_init"].shape[0])
        self._counter.zero_()


def restorer(denoiser: Denoiser, backend: str = AUTO, **kwargs) -> Engine:
    """``Engine(denoiser, EngineConfig(backend=backend, **kwargs))``: switch backends with one argument."""
    return Engine(denoiser, EngineConfig(backend=backend, **kwargs))
