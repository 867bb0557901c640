"""Per-step cost of every restoration method against one network forward (default model, CPU, batch 16).

For each method the engine's step (``Engine.prepare_step``: coefficients, noise, h, h†, the update, and for
VJP methods the backward through the network) is timed interleaved with a bare forward ε_θ(x, t) of the same
batch, so machine load affects both alike; the table gives milliseconds and the step/forward ratio. The
targets: a method without VJP ≤ 1.1 forwards, with VJP ≤ 2.2 forwards, compiled ≥ eager.

    python benchmarks/bench_methods.py --backends eager --reps 10
"""
from __future__ import annotations

import argparse
import time

import torch

import pgdm
import pgdm.engine as E
from pgdm.methods import METHODS
from timing import interleaved_ms


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--backends", default="eager,compile")
    p.add_argument("--task", default="sr4")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    den = pgdm.load_model("default").eval().requires_grad_(False)
    op = pgdm.ops.parse(args.task, (den.channels, den.image_size, den.image_size))
    x = torch.rand(args.batch, den.channels, den.image_size, den.image_size) * 2 - 1
    t = torch.full((args.batch,), 500)
    print("| method | backend | step ms | forward ms | step / forward | compile s |\n|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for name in args.methods.split(","):
            eng = E.restorer(den, backend, steps=20, method=name, batch_sizes=(args.batch,))
            plan = eng.plan(op(x), op, seed=0)
            t0 = time.perf_counter()
            step = eng.prepare_step(plan)  # compiles here for backend="compile"
            compile_s = time.perf_counter() - t0

            def forward() -> None:
                with torch.no_grad():
                    eng.denoiser(x, t)

            ms = interleaved_ms({"step": step, "forward": forward}, "cpu", args.reps)
            print(f"| {name} | {backend} | {ms['step']:.1f} | {ms['forward']:.1f} | {ms['step'] / ms['forward']:.2f} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
