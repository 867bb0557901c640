"""``backend="auto"`` / ``precision="auto"``: measure the configurations this device runs natively, keep the fastest.

For one key — device, torch version, model, operator, method, batch size — :class:`AutoTuner` lists the
:class:`Candidate` configurations the device can run natively (:func:`candidates`: eager or compiled, on CUDA also
captured in a CUDA graph; fp32, and bf16/fp16 only where the hardware computes them; NCHW or channels_last), times one
step of each with an injectable timer within a time budget, keeps the fastest, prints one line
(``engine: compiled fp32 — 212 ms/step``) and stores the choice in a JSON file under the user's cache directory
(:func:`cache_dir`), so the next process with the same key starts at once.

Search order: every eager candidate first (no compile, seconds), then the compiled/captured versions of the
(precision, layout) pairs in the order their eager steps ranked, skipping pairs whose eager step took more than
``PRUNE_RATIO`` times the best eager step (compilation gains far less than that on the step). A candidate
starts only while the budget lasts (a compile that has started runs to its end); with a budget of 0 nothing is
measured and the first candidate (eager, the widest precision asked, NCHW: ``pgdm.Restorer``'s numbers) runs, as
does the only candidate when the explicit settings leave one.

Environment: ``PGDM_CACHE_DIR`` (the cache folder; default ``$XDG_CACHE_HOME/pgdm`` or ``~/.cache/pgdm``),
``PGDM_AUTOTUNE_BUDGET_S`` (the budget when the config leaves it at None; default :data:`DEFAULT_BUDGET_S`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from pgdm.operators import Operator

__all__ = [
    "AUTO",
    "DEFAULT_BUDGET_S",
    "AutoTuner",
    "Candidate",
    "Choice",
    "ChoiceCache",
    "cache_dir",
    "candidates",
    "cpu_flags",
    "device_name",
    "model_fingerprint",
    "native_precisions",
    "operator_key",
    "time_step",
]

AUTO = "auto"
DEFAULT_BUDGET_S = 600.0  # a cold CPU compile of the default model's step takes minutes; a warm Inductor cache, seconds
PRUNE_RATIO = 2.0  # compile a (precision, layout) pair only when its eager step is within this factor of the best
CACHE_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    """One engine configuration the tuner may pick.

    backend: ``"eager"``, ``"compile"``, ``"cudagraph"`` or ``"onnx"``; precision: ``"fp32" | "tf32" | "bf16" | "fp16"``;
    channels_last: NHWC convolutions; compile: ``cudagraph`` only, capture the compiled step (False: the eager one).
    """

    backend: str
    precision: str
    channels_last: bool = False
    compile: bool = True

    @property
    def compiled(self) -> bool:
        """Whether this configuration compiles (``torch.compile``) or exports (ONNX) its step before running it:
        minutes on a CPU with cold caches."""
        return self.backend in ("compile", "onnx") or (self.backend == "cudagraph" and self.compile)

    @property
    def layout(self) -> tuple[str, bool]:
        """(precision, channels_last): what an eager candidate and its compiled versions share."""
        return self.precision, self.channels_last

    def label(self) -> str:
        """``"compiled fp32, channels_last"``, ``"eager bf16"``, ``"CUDA graph of the compiled step fp16"``."""
        kind = {"eager": "eager", "compile": "compiled", "onnx": "ONNX Runtime"}.get(self.backend) or (
            "CUDA graph of the compiled step" if self.compile else "CUDA graph of the eager step"
        )
        return f"{kind} {self.precision}" + (", channels_last" if self.channels_last else "")


@dataclass(frozen=True)
class Choice:
    """The tuner's answer for one key: the candidate, its step time and every measured step time (label → ms)."""

    candidate: Candidate
    step_ms: float | None  # None when nothing was measured (budget 0)
    measured: dict[str, float]
    cached: bool = False  # read from the disk cache


# ---------------------------------------------------------------------------- what the device runs natively


def onnx_runtime_available() -> bool:
    """Whether the exporter (onnx, onnxscript) and ONNX Runtime are installed (``pip install 'pgdm[onnx]'``)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_precisions(device: torch.device, flags: Iterable[str] | None = None) -> tuple[str, ...]:
    """The network precisions ``device`` computes natively, widest first.

    CPU: fp32; bf16 with AVX512-BF16 or AMX-BF16 on x86 (without them oneDNN emulates bfloat16, several times slower
    than fp32) or the BF16 extension on Arm; fp16 with AVX512-FP16 or AMX-FP16 (x86) or FP16 arithmetic (Arm
    ``asimdhp``). ``flags``: the CPU's flags (default :func:`cpu_flags`; x86 falls back to torch's own probes when
    /proc/cpuinfo is unreadable). CUDA: fp32, tf32 and bf16 from compute capability 8.0, fp16.
    """
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ("fp32", "tf32", "bf16", "fp16") if major >= 8 else ("fp32", "fp16")
    if device.type != "cpu":
        return ("fp32",)
    flags = frozenset(cpu_flags() if flags is None else flags)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") or "avx2" in flags or "sse2" in flags
    if x86:
        if flags:
            bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
            fp16 = bool(flags & {"avx512_fp16", "amx_fp16"})
        else:
            bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            fp16 = False
    else:
        bf16, fp16 = "bf16" in flags, "asimdhp" in flags
    return ("fp32",) + (("bf16",) if bf16 else ()) + (("fp16",) if fp16 else ())


def candidates(
    device: torch.device,
    backend: str = AUTO,
    precision: str = AUTO,
    channels_last: bool | None = None,
    *,
    compile: bool = True,
    precisions: Sequence[str] | None = None,
) -> list[Candidate]:
    """The configurations to try for these (possibly ``"auto"``) settings, eager ones first, in search order.

    ``backend="auto"``: eager and compile (CUDA: also ``cudagraph``, of the eager and of the compiled step; CPU: also
    ``onnx`` in fp32 NCHW, where the exporter and ONNX Runtime are installed, tried before compiling);
    ``precision="auto"``: :func:`native_precisions` (``precisions`` overrides the list); ``channels_last=None``:
    both layouts. ``compile``: an explicit ``backend="cudagraph"`` captures the compiled step (True) or the eager one.
    """
    cuda = device.type == "cuda"
    if backend == AUTO:
        onnx = [("onnx", True)] if device.type == "cpu" and onnx_runtime_available() else []
        backends = [("eager", True)] + onnx + [("compile", True)] + ([("cudagraph", False), ("cudagraph", True)] if cuda else [])
    else:
        backends = [(backend, compile)]
    if precision == AUTO:
        precs = list(precisions if precisions is not None else native_precisions(device))
    else:
        precs = [precision]
    layouts = [False, True] if channels_last is None else [channels_last]
    out = [Candidate(b, p, cl, c) for b, c in backends for p in precs for cl in layouts if b != "onnx" or (p == "fp32" and not cl)]
    return sorted(out, key=lambda c: c.compiled)  # stable: eager (and graphs of the eager step) first


# ---------------------------------------------------------------------------- keys and the disk cache


def device_name(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"``, or the CPU's model name with the thread count torch uses (the choice depends on it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ×{torch.get_num_threads()} threads"


def model_fingerprint(module: torch.nn.Module, samples: int = 64) -> str:
    """A hash of a network's parameter and buffer names, shapes and dtypes plus ``samples`` evenly spaced values of
    each tensor: equal for the same weights, cheap for a 2 GB model (no full pass over the weights)."""
    h = hashlib.sha1(type(module).__qualname__.encode())
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel():
            idx = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).long()
            h.update(flat[idx].to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def operator_key(op: Operator) -> str | None:
    """A string naming what ``op`` computes, equal across processes (per-row data such as inpainting masks left
    out: they do not change the cost), or None for an operator known only by identity (not cached on disk)."""
    parts = [m for m in op.modules() if isinstance(m, Operator)]
    if any(not m.keyed_by_content for m in parts):
        return None
    return hashlib.sha1(repr(op.signature()).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$PGDM_CACHE_DIR``, else ``$XDG_CACHE_HOME/pgdm``, else ``~/.cache/pgdm``."""
    if os.environ.get("PGDM_CACHE_DIR"):
        return Path(os.environ["PGDM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pgdm"


class ChoiceCache:
    """Choices on disk: one JSON object (key → candidate and step times) in ``path`` (default
    ``cache_dir()/engine-autotune.json``), rewritten atomically; unreadable or foreign files count as empty."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "engine-autotune.json"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}

    def get(self, key: str) -> Choice | None:
        """The stored choice for ``key``, or None."""
        entry = self._read().get("choices", {}).get(key)
        try:
            return Choice(Candidate(**entry["candidate"]), entry["step_ms"], dict(entry["measured"]), cached=True)
        except (TypeError, KeyError):
            return None

    def put(self, key: str, choice: Choice) -> None:
        """Store ``choice`` under ``key`` (merged with what other processes wrote); a read-only cache is skipped."""
        data = self._read() or {"version": CACHE_VERSION, "choices": {}}
        data["choices"][key] = {"candidate": asdict(choice.candidate), "step_ms": choice.step_ms, "measured": choice.measured,
                                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".engine-autotune.")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass


# ---------------------------------------------------------------------------- measuring


def time_step(step: Callable[[], None], device: torch.device, reps: int = 5, warmup: int = 1) -> float:
    """Median seconds per call of ``step`` over ``reps`` calls, after one call that compiles or captures and
    ``warmup`` more; the device is synchronised around each timed call (outside the step)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # noqa: E731
    for _ in range(1 + warmup):
        step()
    sync()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


Timer = Callable[[Candidate, Callable[[], None]], float]


class AutoTuner:
    """Chooses a :class:`Candidate` per key by timing one step of each (see the module docstring for the order).

    Args:
        device: where the steps run.
        budget_s: seconds of tuning per key, compiles included (a candidate starts only while time is left; None:
            ``$PGDM_AUTOTUNE_BUDGET_S`` or :data:`DEFAULT_BUDGET_S`; 0: measure nothing, take the first candidate).
        timer: ``timer(candidate, step) -> seconds per step``; the first call of ``step`` compiles or captures
            (default: :func:`time_step` on ``device``; tests pass a fake).
        cache: the disk cache (default :class:`ChoiceCache` at its default path; None entries are not stored when
            ``use_disk`` is False).
        clock: monotonic seconds, for the budget.
        log: where the one-line report goes (default: standard error).
    """

    def __init__(
        self,
        device: torch.device,
        budget_s: float | None = None,
        *,
        timer: Timer | None = None,
        cache: ChoiceCache | None = None,
        use_disk: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if budget_s is None:
            budget_s = float(os.environ.get("PGDM_AUTOTUNE_BUDGET_S", DEFAULT_BUDGET_S))
        if not budget_s >= 0:
            raise ValueError(f"the autotune budget must be ≥ 0 seconds, got {budget_s}")
        self.device, self.budget_s, self.clock = device, float(budget_s), clock
        self.timer: Timer = timer or (lambda candidate, step: time_step(step, device))
        self.cache = (cache or ChoiceCache()) if use_disk else None
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.choices: dict[str, Choice] = {}  # this process's choices by key

    def choose(
        self,
        key: str,
        disk_key: str | None,
        options: Sequence[Candidate],
        build: Callable[[Candidate], Callable[[], None]],
        batch: int,
        on_measured: Callable[[Candidate, float], None] | None = None,
    ) -> Choice:
        """The candidate to run for ``key``: remembered, read from disk (``disk_key``; None: never stored), or measured
        (then reported in one line, :meth:`report`).

        ``build(candidate)`` returns a zero-argument step of that configuration whose first call compiles or
        captures (lazily: an unmeasured candidate costs nothing); a build or step that raises drops the candidate.
        ``on_measured(candidate, seconds)`` is called after each measurement (``inf`` for a failure), so that the
        caller can free what the slower candidates hold.
        """
        if key in self.choices:
            return self.choices[key]
        choice = self.cache.get(disk_key) if self.cache is not None and disk_key is not None else None
        if choice is not None and choice.candidate not in options:
            choice = None
        if choice is None:
            choice = self._measure(options, build, on_measured or (lambda c, s: None))
            if self.cache is not None and disk_key is not None and choice.step_ms is not None:
                self.cache.put(disk_key, choice)
        self.choices[key] = choice
        self.report(choice, batch)
        return choice

    def _measure(
        self, options: Sequence[Candidate], build: Callable[[Candidate], Callable[[], None]], on_measured: Callable[[Candidate, float], None]
    ) -> Choice:
        if not options:
            raise ValueError("no engine configuration to choose from")
        if self.budget_s == 0 or len(options) == 1:
            return Choice(options[0], None, {})
        start = self.clock()
        times: dict[Candidate, float] = {}
        failed: dict[Candidate, str] = {}

        def measure(c: Candidate) -> None:
            if self.clock() - start >= self.budget_s:
                return
            try:
                times[c] = self.timer(c, build(c))
            except Exception as err:  # a configuration this device or toolchain cannot run: try the others
                failed[c] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            on_measured(c, times.get(c, float("inf")))

        eager = [c for c in options if not c.compiled]
        for c in eager:
            measure(c)
        rank = {}  # (precision, layout) → its eager step time; compiled candidates follow that order
        for c, s in sorted(times.items(), key=lambda kv: kv[1]):
            rank.setdefault(c.layout, s)
        best_eager = min(times.values(), default=None)
        compiled = [c for c in options if c.compiled and (best_eager is None or c.layout not in rank or rank[c.layout] <= PRUNE_RATIO * best_eager)]
        compiled.sort(key=lambda c: rank.get(c.layout, float("inf")))
        for c in compiled:
            measure(c)
        if not times:
            reasons = "; ".join(f"{c.label()}: {r}" for c, r in failed.items()) or "no time budget left"
            raise RuntimeError(f"pgdm.engine: no configuration ran ({reasons})")
        best = min(times, key=times.__getitem__)
        return Choice(best, times[best] * 1e3, {c.label(): round(s * 1e3, 3) for c, s in times.items()})

    def report(self, choice: Choice, batch: int) -> None:
        """Print the one-line report: ``engine: compiled fp32, channels_last — 212 ms/step (batch 16)``."""
        how = "" if choice.step_ms is None else f" — {choice.step_ms:.0f} ms/step"
        origin = ", cached choice" if choice.cached else (", not measured" if choice.step_ms is None else "")
        self.log(f"engine: {choice.candidate.label()}{how} (batch {batch}{origin})")


# ---------------------------------------------------------------------------- the engine's side


class AutoRouter:
    """The part of an ``"auto"`` :class:`~pgdm.engine.Engine` that picks and holds the fixed-configuration engines.

    ``make_engine(candidate)`` builds an engine of that one configuration (the runner passes
    ``Engine(denoiser, config.fixed(candidate))``). One engine per chosen candidate serves every key that chose it;
    while measuring, only the fastest candidate's engine so far is kept beside them (each holds a copy of the model).
    """

    def __init__(self, denoiser: torch.nn.Module, options: Sequence[Candidate], setting: str, tuner: AutoTuner, make_engine: Callable[[Candidate], object]) -> None:
        self.denoiser, self.options, self.setting, self.tuner = denoiser, list(options), setting, tuner
        self.make_engine = make_engine
        self.engines: dict[Candidate, object] = {}
        self._fingerprint: str | None = None

    def _disk_key(self, plan, batch: int) -> str | None:
        op = operator_key(plan.op)
        if op is None:
            return None
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.denoiser)
        return "|".join([
            device_name(self.tuner.device), f"torch {torch.__version__}", f"model {self._fingerprint}", f"op {op}",
            self._shape_key(plan, batch), self.setting,
        ])  # fmt: skip

    @staticmethod
    def _shape_key(plan, batch: int) -> str:
        c, h, w = plan.x_init.shape[1:]
        return (f"{plan.method} batch {batch} {c}x{h}x{w} {plan.x_init.dtype} noisy={plan.sigma_y2 is not None} "
                f"labels={plan.class_labels is not None} clip={plan.clip_denoised}")  # fmt: skip

    def _engine(self, candidate: Candidate):
        if candidate not in self.engines:
            self.engines[candidate] = self.make_engine(candidate)
        return self.engines[candidate]

    def engine_for(self, plan, batch: int):
        """The engine that runs ``plan`` (whose batch pads to ``batch``), choosing its configuration on first sight."""
        key = f"{self._shape_key(plan, batch)} op {plan.op.signature()!r}"
        known = key in self.tuner.choices

        def build(candidate: Candidate) -> Callable[[], None]:
            engine, state = self._engine(candidate), {}

            def step() -> None:
                if "run" not in state:
                    state["run"] = engine.prepare_step(plan)  # compiles or captures, then runs one step
                else:
                    state["run"]()

            return step

        times: dict[Candidate, float] = {}

        def measured(candidate: Candidate, seconds: float) -> None:
            times[candidate] = seconds
            keep = {c.candidate for c in self.tuner.choices.values()} | {min(times, key=times.__getitem__)}
            self.engines = {c: e for c, e in self.engines.items() if c in keep}

        choice = self.tuner.choose(key, None if known else self._disk_key(plan, batch), self.options, build, batch, measured)
        chosen = {c.candidate for c in self.tuner.choices.values()}
        self.engines = {c: e for c, e in self.engines.items() if c in chosen}
        return self._engine(choice.candidate)
