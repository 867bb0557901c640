"""Few-step restoration quality on the default model: PSNR of one sample per method and step count, with latency.

Held-out Fashion-MNIST test images (evenly spaced over the test split), noiseless SR×4 (pool), centre
inpainting and 9×9 uniform deblurring; one posterior sample per image (seed 0); ``pgdm.Restorer`` (eager,
float32) on this machine's CPU. ``psnr_projected`` is the PSNR after ending on the measurement,
x + h†(y) − h†(h(x)) (clamped to [-1, 1]), which a caller can apply to any method's output. A run is ``name[:option=value...][@start_step]/steps``, e.g. ``cpigdm@400/10``;
rows are appended to ``--csv`` as they finish.

    python benchmarks/few_step_quality.py --n 16 --runs cpigdm@400/5,cpigdm@400/10,pigdm/20,ddrm/20 --csv few_step.csv
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

import pgdm
from pgdm.entrypoints.bench.cells import MethodSpec, parse_list
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.metrics import psnr
from pgdm.ops import parse

TASKS = [("SR×4 (pool)", "sr4-pool"), ("centre inpainting", "inpaint-center"), ("9×9 uniform deblurring", "blur-uniform9")]


def parse_run(text: str) -> tuple[MethodSpec, int]:
    """``spec[@start]/steps`` → (MethodSpec, steps)."""
    head, sep, steps = text.partition("/")
    if not sep:
        raise ValueError(f"run {text!r} must be METHOD[@START]/STEPS")
    return MethodSpec.parse(head), int(steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--runs", default="cpigdm@400/5,cpigdm@400/10,cpigdm@400/20,pigdm/20,pigdm/100,ddrm/20")
    p.add_argument("--tasks", default=",".join(s for _, s in TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", type=Path, help="append one row per run to this CSV file")
    args = p.parse_args()
    runs = [parse_run(t) for t in args.runs.split(",") if t.strip()]
    tasks = [t for t in TASKS if t[1] in parse_list(args.tasks, str, "--tasks")]
    den = pgdm.load_model("default")
    test = load_fashion_mnist(split="test", size=den.image_size)
    images = to_model_range(test[torch.linspace(0, test.shape[0] - 1, args.n).round().long()])
    fields = ["task", "method", "steps", "psnr", "psnr_projected", "seconds"]
    if args.csv and not args.csv.exists():
        args.csv.write_text(",".join(fields) + "\n")
    for label, spec in tasks:
        op = parse(spec, tuple(images.shape[1:]), seed=args.seed)
        y = op(images)
        y_pinv = op.pinv(y)
        baseline = round(float(psnr(y_pinv.clamp(-1, 1), images).mean()), 2)
        print(f"{label}: h†(y) {baseline:.2f} dB", flush=True)
        if args.csv:
            with open(args.csv, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerow({"task": label, "method": "h†(y)", "steps": 0, "psnr": baseline, "psnr_projected": baseline, "seconds": 0})
        for method, n in runs:
            restorer = pgdm.Restorer(den, steps=n, start_step=method.start_step, method=method.name, options=dict(method.options))
            t0 = time.perf_counter()
            x = restorer.restore(y, op, seed=args.seed)
            seconds = time.perf_counter() - t0
            projected = (x + y_pinv - op.project(x)).clamp(-1, 1)
            row = {"task": label, "method": method.label, "steps": n, "psnr": round(float(psnr(x, images).mean()), 2),
                   "psnr_projected": round(float(psnr(projected, images).mean()), 2), "seconds": round(seconds, 2)}  # fmt: skip
            print(f"  {row['method']:28s} {n:4d} steps  {row['psnr']:6.2f} dB  projected {row['psnr_projected']:6.2f} dB  {seconds:6.1f} s", flush=True)
            if args.csv:
                with open(args.csv, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=fields).writerow(row)


if __name__ == "__main__":
    main()
