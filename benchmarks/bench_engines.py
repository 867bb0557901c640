"""Whole restores, every runner in one process, interleaved: a plain eager ΠGDM loop, ``pgdm.Restorer``, every engine
configuration this device runs (the exported step in ONNX Runtime among them), ``backend="auto"``, and the same
exported step in OpenVINO.

    OMP_NUM_THREADS=2 python benchmarks/bench_engines.py --batch 16 1 --steps 20 --rounds 5

For each batch size: the default model (trained weights), SR×4 (pool), noiseless, ``--steps`` ΠGDM steps from y to the
restored images. The runners are called in turn ``--rounds`` times (a load change on a shared machine hits them all
alike); the table gives the min and median seconds per restore, the speed-up over the plain loop (min / median), the
step in ms (median / steps) and the step over one eager float32 network forward (timed in the same rounds).

* ``plain eager loop``: ΠGDM as research code writes it: weights left trainable, ``x.requires_grad_()``, the network,
  ``torch.autograd.grad`` of x̂ w.r.t. x, the update with ``torch.randn`` noise and Python-float coefficients.
* ``pgdm.Restorer``: the package's eager sampler. ``engine …``: ``pgdm.engine`` with one fixed configuration each
  (:func:`pgdm.engine.autotune.candidates`: eager/compiled × the native precisions × NCHW/channels_last; on CUDA CUDA
  graphs too), plus ``--variants`` (compiled fp32 with extra Inductor settings). ``engine auto``: the default engine,
  which measures those configurations itself (its choice is printed). Compile times are reported apart.
* ``openvino``: the file of the ``engine ONNX Runtime fp32`` configuration (the step exported by
  :func:`pgdm.export.export_step`) run by OpenVINO's CPU runtime (when ``openvino`` is installed).

The header names the CPU and its ISA (AVX2, AVX-512, AVX512-BF16, AMX), torch, threads, the commit and the load
(``uptime``) before and after. Never collected by pytest.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

import pgdm
import pgdm.engine as E
from pgdm import schedules
from pgdm.engine.autotune import candidates, cpu_flags, device_name, native_precisions
from pgdm.methods import pigdm_coefficients

VARIANTS = {  # name → Inductor settings over the engine's, for a compiled fp32 NCHW step
    "freezing": {"freezing": True},
    "cpp_wrapper": {"cpp_wrapper": True},
    "freezing+cpp_wrapper": {"freezing": True, "cpp_wrapper": True},
}


def isa_line() -> str:
    """``AVX2 yes, AVX-512 no, AVX512-BF16 no, AMX no`` from /proc/cpuinfo's flags."""
    flags = cpu_flags()
    has = {"AVX2": "avx2" in flags, "AVX-512": "avx512f" in flags, "AVX512-BF16": "avx512_bf16" in flags,
           "AMX": bool(flags & {"amx_tile", "amx_bf16"})}  # fmt: skip
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in has.items())


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def plain_loop(den: pgdm.Denoiser, op, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """ΠGDM (Alg. 1, noiseless, x̂ clamped as guided-diffusion does) written as research code: trainable weights,
    autograd through the network, host-side coefficients, ``torch.randn`` noise."""
    net = copy.deepcopy(den).requires_grad_(True)
    ts = schedules.timesteps(steps, den.num_timesteps)
    c = {k: v.tolist() for k, v in pigdm_coefficients(den.alphas_cumprod, ts).items()}

    def restore(y: torch.Tensor) -> torch.Tensor:
        y_pinv = op.pinv(y)
        x = torch.randn_like(y_pinv)
        for i in range(steps):
            a, a_s = c["alpha_t"][i], c["alpha_s"][i]
            x = x.detach().requires_grad_()
            eps = net(x, torch.full((x.shape[0],), c["t"][i], dtype=torch.int64, device=x.device))
            x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
            (g,) = torch.autograd.grad(x0, x, y_pinv - op.project(x0.detach()))
            x0 = x0.detach().clamp(-1, 1)
            eps = (x.detach() - a**0.5 * x0) / (1 - a) ** 0.5
            x = a_s**0.5 * x0 + c["c1"][i] * torch.randn_like(x0) + c["c2"][i] * eps + c["w"][i] * g
        return x.detach().clamp(-1, 1)

    return restore


class OpenVinoStep:
    """The exported step compiled by OpenVINO for its CPU plugin (float32 inference), fed like ONNX Runtime."""

    def __init__(self, path: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.request = self.compiled.create_infer_request()
        self.out = self.compiled.output("x_next")

    def restore(self, feeder, plan) -> torch.Tensor:
        """``feeder``: the :class:`~pgdm.export.OnnxStepRestorer` of the same file (its inputs per step)."""
        fixed, x = feeder.plan_inputs(plan), plan.x_init.float().cpu()
        for i in range(plan.coefs["t"].shape[0]):
            x = torch.from_numpy(self.request.infer(feeder.step_feed(plan, x, i, fixed))[self.out].copy())
        return pgdm.sampler.summarize_samples(x, plan.num_samples, False)


def runners(args, den, op, y, batch: int, device: torch.device) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """name → zero-argument restore of ``y``, all warm; and name → seconds spent compiling/exporting."""
    steps, out, setup, engines = args.steps, {}, {}, {}
    plain = plain_loop(den, op, steps)
    out["plain eager loop"] = lambda: plain(y)
    restorer = pgdm.Restorer(den, steps=steps)
    out["pgdm.Restorer"] = lambda: restorer.restore(y, op, seed=0)
    precisions = args.precisions or native_precisions(device)
    configs = [(c.label(), dict(backend=c.backend, precision=c.precision, channels_last=c.channels_last, compile=c.compile))
               for c in candidates(device, precisions=precisions, channels_last=args.channels_last)
               if args.compile or not c.compiled]  # fmt: skip
    configs += [(f"compiled fp32 [{name}]", dict(backend="compile", precision="fp32", channels_last=False, compile_options=VARIANTS[name]))
                for name in args.variants]  # fmt: skip
    configs += [("auto", {})] if args.auto else []
    for label, kw in configs:
        start = time.perf_counter()
        try:
            eng = E.restorer(den, steps=steps, batch_sizes=(batch,), **kw)
            eng.restore(y, op, seed=0)  # compiles / captures / (auto) measures
        except Exception as err:  # report and go on: one failing configuration must not hide the others
            print(f"# engine {label}, batch {batch}: FAILED: {type(err).__name__}: {str(err)[:200]}", flush=True)
            continue
        setup[f"engine {label}"] = time.perf_counter() - start
        print(f"# engine {label}, batch {batch}: ready in {setup[f'engine {label}']:.0f} s", flush=True)
        out[f"engine {label}"] = lambda eng=eng: eng.restore(y, op, seed=0)
        engines[label] = eng
    ort_engine = engines.get("ONNX Runtime fp32")
    if args.openvino and ort_engine is not None:
        ort = next(iter(ort_engine._onnx.runners.values()))  # the engine's exported step: OpenVINO reads the same file
        plan = lambda: pgdm.sampler.plan_sampling(den, y, op, pgdm.sampler.SamplerSettings(steps=steps), seed=0)  # noqa: E731
        try:
            start = time.perf_counter()
            ov = OpenVinoStep(ort.path, torch.get_num_threads())
            setup["openvino"] = time.perf_counter() - start
            out["openvino"] = lambda: ov.restore(ort, plan())
        except ImportError:
            print("# openvino is not installed: pip install openvino", flush=True)
    return out, setup


def bench_batch(args, den, batch: int, device: torch.device) -> None:
    c, s = den.channels, den.image_size
    op = pgdm.ops.parse(args.op, (c, s, s)).to(device)
    y = op((torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device))
    calls, setup = runners(args, den, op, y, batch, device)
    x = torch.randn(batch, c, s, s, device=device)
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)
    forward = torch.no_grad()(lambda: den(x, t))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # noqa: E731
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    fwd: list[float] = []
    print(f"# batch {batch}: timing {len(calls)} runners × {args.rounds} rounds; load before: {load()}", flush=True)
    for _ in range(args.rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            samples[name].append(time.perf_counter() - start)
        for _ in range(3):
            start = time.perf_counter()
            forward()
            sync()
            fwd.append(time.perf_counter() - start)
    print(f"# batch {batch}: load after: {load()}", flush=True)
    base_min, base_med = min(samples["plain eager loop"]), statistics.median(samples["plain eager loop"])
    fwd_ms = statistics.median(fwd) * 1e3
    print(f"\n| batch {batch} runner | min s | median s | vs plain loop (min / median) | step ms | step / fwd | setup s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, v in sorted(samples.items(), key=lambda kv: statistics.median(kv[1]), reverse=True):
        lo, med = min(v), statistics.median(v)
        step_ms = med / args.steps * 1e3
        prep = f"{setup[name]:.0f}" if name in setup else "–"
        print(f"| {name} | {lo:.3f} | {med:.3f} | {base_min / lo:.2f}× / {base_med / med:.2f}× | {step_ms:.1f} | {step_ms / fwd_ms:.2f} | {prep} |")
    print(f"\n# eager fp32 forward (no grad), batch {batch}: {fwd_ms:.1f} ms (median of {len(fwd)})\n", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 1])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--op", default="sr4")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", nargs="+", default=None, help="network precisions to run (default: the native ones)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the compiled configurations")
    p.add_argument("--layouts", choices=["both", "nchw", "channels_last"], default="both", help="the engine layouts to run")
    p.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="compiled fp32 with extra Inductor settings")
    p.add_argument("--no-auto", dest="auto", action="store_false", help="leave out the auto engine")
    p.add_argument("--no-openvino", dest="openvino", action="store_false", help="leave out OpenVINO (it runs the file of the ONNX Runtime engine)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.channels_last = {"both": None, "nchw": False, "channels_last": True}[args.layouts]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    print(f"# bench_engines: {device_name(device)}; {isa_line()}; torch {torch.__version__}; commit {commit}")
    print(f"# command: {' '.join(sys.argv)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    den = pgdm.load_model("default", device=device)
    for batch in args.batch:
        bench_batch(args, den, batch, device)


if __name__ == "__main__":
    main()
