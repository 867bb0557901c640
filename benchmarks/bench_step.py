"""Per-step cost of the ΠGDM engine.

For a model config (``default``: the Fashion-MNIST ADM UNet at 32×32; ``adm256``: guided-diffusion's
256×256 unconditional ImageNet model; ``ffhq256``: DPS's FFHQ model; random weights: timing does not
need trained ones), batch sizes, precisions and backends, reports:

* ``fwd``: one network forward (no grad), run the way the backend runs it (eager / compiled / graph);
* ``step``: one engine step (forward + input-only VJP + h, h† + RNG + update), and ``step/fwd``;
* ``net`` (``--net``): forward + input-only VJP alone; ``other``: the step with a zero network (h, h†, RNG, update
  and autograd bookkeeping only), as a share of the step;
* images/s per step, FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (counted on the
  meta device: matmuls/convolutions/attention, forward and backward), achieved TFLOP/s, and MFU against a
  matmul peak measured on the same device and dtype; peak memory;
* ``restore``: a whole restore of ``--restore-steps`` steps with the engine, against ``pgdm.Restorer``
  (eager, float32, the research-code path) at the same steps, the two called in turn (medians).

Timing: ``triton.testing.do_bench`` (CUDA events, quantiles 0.5/0.2/0.8) on CUDA; ``time.perf_counter``
on CPU with the same quantiles. Compile/capture time is reported separately. Never collected by pytest.

    OMP_NUM_THREADS=2 python benchmarks/bench_step.py --config default --batch 16 --backends eager compile
    python benchmarks/bench_step.py --device cuda --config adm256 --batch 1 16 --backends cudagraph --precisions bf16
"""
from __future__ import annotations

import argparse
import ast
import csv
import gc
import os
import platform
import resource
import subprocess
import sys
import time

import torch
from timing import exclusive_device, interleaved_ms, time_ms
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import pgdm.engine as E
from pgdm import Denoiser, Restorer, schedules
from pgdm.engine.compile import compile_step
from pgdm.engine.graphs import capture_cuda_graph
from pgdm.engine.precision import network_dtype, precision_context
from pgdm.models import ADMUNet, ModelConfig
from pgdm.ops import parse
from pgdm.methods.common import denoise_with_vjp

DEFAULT_MODEL = dict(
    in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1, attention_ds=(4,), channel_mult=(1, 2, 2),
    num_heads=4, use_scale_shift_norm=True, resblock_updown=True,
)  # fmt: skip
PRESET = {"adm256": "256x256_diffusion_uncond", "ffhq256": "ffhq_10m"}


def build_denoiser(config: str, device: torch.device | str) -> Denoiser:
    """The config's network with random weights, wrapped as a Denoiser, built directly on ``device``."""
    with torch.device(device):
        if config == "default":
            return Denoiser(ADMUNet(**DEFAULT_MODEL), schedules.linear(1000), channels=1, image_size=32).eval()
        cfg = ModelConfig.from_name(PRESET[config])
        net = cfg.build()
        acp = schedules.from_name(cfg.noise_schedule, cfg.diffusion_steps)
        return Denoiser(net, acp, learn_sigma=cfg.learn_sigma, class_cond=cfg.class_cond, image_size=cfg.image_size, channels=cfg.channels).eval()


def peak_tflops(device: torch.device, precision: str) -> float:
    """Measured dense matmul throughput in the network's dtype (TF32 for tf32), TFLOP/s."""
    dtype = network_dtype(precision)
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    with precision_context(precision, device):
        ms = time_ms(lambda: a @ b, device, 10)[0]
    return 2 * n**3 / (ms * 1e-3) / 1e12


class _ZeroNet(nn.Module):
    """ε = 0·x: the step without its network (operator, RNG, update and autograd bookkeeping only)."""

    def forward(self, x, t, *args):
        return x * 0


class _GlobalOnly:
    """Stand-in for FlopCounterMode's ModuleTracker: its backward hooks fail inside the step's VJP
    on a leaf input ("A leaf node was passed to _will_engine_execute_node"), and we only need the total."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def _flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def count_flops(config: str, batch: int, op_spec: str, sigma_y: float) -> tuple[float, float]:
    """(forward, step) FLOPs per image, counted on the meta device (shapes only, nothing computed)."""
    with torch.device("meta"):
        den = build_denoiser(config, "meta")
        den.requires_grad_(False)
        c, s = den.channels, den.image_size
        op = parse(op_spec, (c, s, s))
        x = torch.randn(batch, c, s, s)
        t = torch.full((batch,), 500, dtype=torch.int64)
        y = op(x)
        tables = {n: torch.rand(4) for n in ("alpha_t", "alpha_s", "c1", "c2", "r2", "w")} | {"t": torch.full((4,), 500, dtype=torch.int64)}
        keys, counter = torch.zeros(batch, dtype=torch.int64), torch.zeros((), dtype=torch.int64)
        sigma_y2 = torch.full((batch,), sigma_y**2) if sigma_y > 0 else None
        with _flop_counter() as fwd, torch.no_grad():
            den(x, t)
        with _flop_counter() as step, torch.no_grad():
            E.engine_step_(den, op, x, counter, tables, y, x.clone(), keys, sigma_y2, None)
    return fwd.get_total_flops() / batch, step.get_total_flops() / batch


def network_fns(eng: E.Engine, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, with_forward: bool, with_vjp: bool) -> dict:
    """{"forward": …, "vjp": forward + input-only VJP} (as asked) of the engine's network, zero-argument callables on its backend."""
    den = eng.denoiser
    v = torch.randn_like(x)
    alpha = torch.full((), 0.5, device=x.device)  # built outside any graph: no host copy inside a capture

    def forward(x, t, labels):
        return den(x, t, labels)

    def fwd_vjp(x, t, labels, v, alpha):  # the VJP as pigdm_step takes it
        return denoise_with_vjp(den, x, {"t": t[0], "alpha_t": alpha}, labels, True)[1](v)

    cfg, device = eng.config, eng.device
    compiled = cfg.backend == "compile" or (cfg.backend == "cudagraph" and cfg.compile)
    if compiled:
        forward, fwd_vjp = (
            compile_step(f, device, cfg.compile_mode, channels_last=cfg.channels_last, options=cfg.compile_options) for f in (forward, fwd_vjp)
        )
    calls = {"forward": lambda: forward(x, t, labels), "vjp": lambda: fwd_vjp(x, t, labels, v, alpha)}
    out = {}
    for name, call in calls.items():
        if not (with_forward if name == "forward" else with_vjp):
            continue
        with torch.no_grad(), precision_context(cfg.precision, device):
            call()  # compile
            if cfg.backend == "cudagraph":
                out[name] = capture_cuda_graph(call, stream=torch.cuda.Stream(device=device)).replay
                continue

        def run(call=call):
            with torch.no_grad(), precision_context(cfg.precision, device):
                call()

        out[name] = run
    return out


_KERNEL_KINDS = (  # (kind, substrings of lower-cased kernel names), first match wins
    ("Inductor-generated (fused)", ("triton_",)),  # named after the aten ops they fuse: checked first
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("layout transposes", ("nchwtonhwc", "nhwctonchw")),
    ("conv/matmul", ("conv", "gemm", "xmma", "cutlass", "wgrad", "dgrad", "mm_", "addmm", "bmm")),
    ("copies/casts", ("copy", "transpose", "clone")),
    ("norm", ("group_norm", "groupnorm", "layer_norm", "moments", "internalgradients")),
)


def kernel_profile(fn, device: torch.device, top: int) -> str:
    """Device time of one call of ``fn`` by kind of kernel (``_KERNEL_KINDS``; the rest is PyTorch's elementwise
    and other kernels), and its ``top`` costliest kernels, as text for the benchmark's log."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)  # noqa: E731
    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
        sync()
    kind_of_event = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    events = [e for e in prof.key_averages() if e.device_type == kind_of_event and not e.is_user_annotation]
    cost = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)  # noqa: E731
    total = sum(cost(e) for e in events)
    if not total:
        return "# profile of one call: no device events recorded (kernels inside a CUDA graph not traced here?)"
    kinds: dict[str, float] = {}
    for e in events:
        name = e.key.lower()
        kind = next((k for k, keys in _KERNEL_KINDS if any(w in name for w in keys)), "elementwise/other")
        kinds[kind] = kinds.get(kind, 0.0) + cost(e)
    lines = [f"# profile of one call: {total / 1e3:.1f} ms of {'GPU' if cuda else 'CPU'} time: "
             + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))]
    for e in sorted(events, key=cost, reverse=True)[:top]:
        lines.append(f"#   {cost(e) / 1e3:8.2f} ms  {e.count:5d}×  {e.key[:110]}")
    return "\n".join(lines)


def backend_label(args, backend: str) -> str:
    """The backend column: "cudagraph(eager step)" for a captured eager step, Inductor options in brackets."""
    if backend == "cudagraph" and args.no_compile:
        return "cudagraph(eager step)"
    options = ",".join(f"{k}={v}" for k, v in args.inductor.items())
    return f"{backend}[{options}]" if options and backend != "eager" else backend


def inductor_option(text: str) -> tuple[str, object]:
    """"NAME=VALUE" → (NAME, VALUE as a Python literal: True, 64, 'x', …) for ``--inductor``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{name}: value {value!r} is not a Python literal (True, 64, 'x', …)") from None


def save_compile_cache(path: str) -> None:
    """Write every torch.compile artifact of this process (``torch.compiler.save_cache_artifacts``) to ``path``."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is not None:
        with open(path, "wb") as f:
            f.write(saved[0])
        print(f"# compile cache {path}: {len(saved[0]) / 2**20:.1f} MiB saved", flush=True)


def bench_one(args, den: Denoiser, backend: str, precision: str, batch: int, flops: tuple[float, float], peaks: dict) -> dict:
    device = args.device
    c, s = den.channels, den.image_size
    op = parse(args.op, (c, s, s)).to(device)
    gen = torch.Generator().manual_seed(0)
    clean = (torch.rand(batch, c, s, s, generator=gen) * 2 - 1).to(device)
    labels = 0 if den.class_cond else None
    kw = dict(steps=args.restore_steps or 100, precision=precision, channels_last=args.channels_last, batch_sizes=(batch,))
    if backend != "eager":
        kw["compile_mode"] = args.compile_mode
        kw["compile_options"] = args.inductor
    if backend == "cudagraph":
        kw["compile"] = not args.no_compile
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    eng = E.Engine(den, E.EngineConfig(backend=backend, **kw))
    y = op(clean)
    plan = eng.plan(y, op, sigma_y=args.sigma_y, seed=0, class_labels=labels)
    step = eng.prepare_step(plan)
    x = plan.x_init
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)
    lab = plan.class_labels
    net = network_fns(eng, x, t, lab, args.forward, args.net)
    zero = Denoiser(_ZeroNet(), den.alphas_cumprod, channels=c, image_size=s)
    try:
        other = E.Engine(zero, E.EngineConfig(backend=backend, **kw)).prepare_step(plan)
    except RuntimeError as e:  # e.g. a cudagraph key that cannot be captured
        print(f"# {backend}/{precision}/batch {batch}: zero-network step not measured: {e}", flush=True)
        other = None
    sync()
    compile_s = time.perf_counter() - t0
    print(f"# {backend}/{precision}/batch {batch}: compiled/captured in {compile_s:.0f} s", flush=True)
    if args.compile_cache:  # saved now, so that a run cut short while timing still leaves it
        save_compile_cache(args.compile_cache)

    with exclusive_device(args.device_lock):  # compiled/captured above, outside the lock
        if precision not in peaks:
            peaks[precision] = peak_tflops(device, precision)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        nan = (float("nan"),) * 3
        fwd_ms = time_ms(net["forward"], device, args.reps) if "forward" in net else nan
        step_ms = time_ms(step, device, args.reps)
        net_ms = time_ms(net["vjp"], device, args.reps) if "vjp" in net else nan
        other_ms = time_ms(other, device, args.reps) if other is not None else nan
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if args.profile:
            print(f"# {backend}/{precision}/batch {batch}, one step:\n" + kernel_profile(step, device, args.profile), flush=True)
        row = dict(
            config=args.config, device=args.device_name, backend=backend_label(args, backend),
            precision=precision + ("+cl" if args.channels_last else ""), batch=batch, op=args.op,
            gflop_img_fwd=flops[0] / 1e9, fwd_ms=fwd_ms[0], step_ms=step_ms[0], step_p20=step_ms[1], step_p80=step_ms[2], ratio=step_ms[0] / fwd_ms[0],
            net_ms=net_ms[0], other_ms=other_ms[0], other_pct=100 * other_ms[0] / step_ms[0],
            img_s=batch / (step_ms[0] * 1e-3), gflop_img_step=flops[1] / 1e9,
            tflops=flops[1] * batch / (step_ms[0] * 1e-3) / 1e12, peak_tflops=peaks[precision],
            mem_gib=mem, compile_s=compile_s,
        )  # fmt: skip
        row["mfu_pct"] = 100 * row["tflops"] / row["peak_tflops"]
        if args.restore_steps:  # engine and pgdm.Restorer called in turn, so load changes hit both alike
            restorers = {"restore_s": eng} | ({"restorer_s": Restorer(den, steps=args.restore_steps)} if args.baseline else {})
            calls = {name: (lambda r=r: r.restore(y, op, sigma_y=args.sigma_y, seed=0, class_labels=labels)) for name, r in restorers.items()}
            for call in calls.values():
                call()  # warm-up (the engine's step is already compiled/captured)
            for name, ms in interleaved_ms(calls, device, args.restore_reps).items():
                row[name] = ms / 1e3
            if args.baseline:
                row["speedup"] = row["restorer_s"] / row["restore_s"]
    return row


COLUMNS = [
    ("config", "{}"), ("backend", "{}"), ("precision", "{}"), ("batch", "{}"), ("fwd_ms", "{:.2f}"), ("step_ms", "{:.2f}"),
    ("ratio", "{:.2f}"), ("net_ms", "{:.2f}"), ("other_ms", "{:.2f}"), ("other_pct", "{:.1f}"), ("img_s", "{:.1f}"),
    ("gflop_img_fwd", "{:.2f}"), ("gflop_img_step", "{:.2f}"), ("tflops", "{:.3f}"), ("peak_tflops", "{:.2f}"), ("mfu_pct", "{:.1f}"), ("mem_gib", "{:.2f}"),
    ("compile_s", "{:.0f}"), ("restore_s", "{:.3f}"), ("restorer_s", "{:.3f}"), ("speedup", "{:.2f}"),
]  # fmt: skip
CSV_FIELDS = ["commit", "device", "op", *(c for c, _ in COLUMNS), "step_p20", "step_p80"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="default", choices=["default", *PRESET])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[16])
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=sorted(E.PRECISIONS))
    p.add_argument("--backends", nargs="+", default=["eager", "compile"], choices=E.BACKENDS)
    p.add_argument("--op", default="sr4", help="operator spec (pgdm.ops.parse); default sr4")
    p.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise (σ_y > 0 uses the noisy guidance)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--net", action="store_true", help="also time forward + input-only VJP alone (one more compile/capture)")
    p.add_argument("--no-forward", dest="forward", action="store_false", help="skip timing the forward alone (saves its compile)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print one step's device time by kind of kernel and its N costliest kernels")
    p.add_argument("--compile-cache", default=None, help="torch.compile artifacts: loaded from this file if it exists, saved to it after each compile")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: the engine's, 'default')")
    p.add_argument(
        "--inductor", action="append", default=[], type=inductor_option, metavar="NAME=VALUE",
        help="an Inductor setting for the compiled step (repeatable), e.g. conv_1x1_as_mm=True",
    )  # fmt: skip
    p.add_argument("--no-compile", action="store_true", help="cudagraph: capture the eager step instead of the compiled one")
    p.add_argument("--reps", type=int, default=10, help="timed calls per measurement (at least; do_bench's time budget is sized from it on CUDA)")
    p.add_argument("--restore-steps", type=int, default=20, help="steps of the whole-restore timing (0: skip)")
    p.add_argument("--restore-reps", type=int, default=3)
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip timing pgdm.Restorer")
    p.add_argument("--csv", default=None, help="append rows to this CSV file")
    p.add_argument("--device-lock", default=None, metavar="FILE", help="time only while holding an flock on FILE (compile outside it)")
    args = p.parse_args(argv)
    args.inductor = dict(args.inductor)
    args.device = torch.device(args.device)
    if args.device.type == "cuda":
        args.device_name = torch.cuda.get_device_name(args.device)
    else:
        model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
        args.device_name = f"{model} ×{torch.get_num_threads()} threads"
    try:  # the device machine gets a copy of the tree without .git (and may lack git)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    print(f"# bench_step: {args.config} on {args.device_name}, torch {torch.__version__}, commit {commit}, op {args.op}, σ_y {args.sigma_y}")
    print(f"# command: {' '.join(sys.argv)}")

    if args.compile_cache and os.path.exists(args.compile_cache):
        with open(args.compile_cache, "rb") as f:
            info = torch.compiler.load_cache_artifacts(f.read())
        print(f"# compile cache {args.compile_cache}: {sum(map(len, info.artifacts.values())) if info else 0} artifacts loaded")
    den = build_denoiser(args.config, args.device)
    peaks: dict[str, float] = {}  # measured in bench_one's first timed section (under the device lock, after compiling)
    rows = []
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for batch in args.batch:
        flops = count_flops(args.config, batch, args.op, args.sigma_y)
        for precision in args.precisions:
            for backend in args.backends:
                try:
                    row = bench_one(args, den, backend, precision, batch, flops, peaks)
                except Exception as e:  # report and go on: one failing combination must not hide the others
                    print(f"| {args.config} | {backend} | {precision} | {batch} | FAILED: {type(e).__name__}: {str(e)[:200]} |", flush=True)
                    continue
                rows.append(row)
                gc.collect()
                if args.device.type == "cuda":
                    torch.cuda.empty_cache()
                print("| " + " | ".join(f.format(row[c]) if c in row else "–" for c, f in COLUMNS) + " |", flush=True)
    if args.csv and rows:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:  # fixed columns: runs appending to one file stay aligned
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
            if new:
                w.writeheader()
            for r in rows:
                w.writerow({"commit": commit, **r})


if __name__ == "__main__":
    main()
