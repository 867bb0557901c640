"""Few-step restoration quality on the default model: PSNR of one sample per method and step count, with latency.

Held-out Fashion-MNIST test images (evenly spaced over the test split), noiseless SR×4 (pool), centre
inpainting and 9×9 uniform deblurring; one posterior sample per image (seed 0); ``pgdm.Restorer`` (eager,
float32) on this machine's CPU. A method is ``name[:option=value...][@start_step]``, e.g. ``cpigdm:w=2@400``.

    python benchmarks/few_step_quality.py --n 16 --methods pigdm,ddrm,cpigdm --steps 5,10,20,100 --out bench-out
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

import pgdm
from pgdm.bench.cells import MethodSpec, parse_list
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.metrics import psnr
from pgdm.ops import parse

TASKS = [("SR×4 (pool)", "sr4-pool"), ("centre inpainting", "inpaint-center"), ("9×9 uniform deblurring", "blur-uniform9")]


def parse_run(text: str) -> tuple[MethodSpec, int | None]:
    """``spec[@start]`` → (MethodSpec, start_step or None)."""
    spec, _, start = text.partition("@")
    return MethodSpec.parse(spec), (int(start) if start else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--methods", default="pigdm,ddrm,cpigdm")
    p.add_argument("--steps", default="5,10,20,100")
    p.add_argument("--tasks", default=",".join(s for _, s in TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for results.csv (must not exist yet)")
    args = p.parse_args()
    runs = [parse_run(t) for t in args.methods.split(",") if t.strip()]
    steps = parse_list(args.steps, int, "--steps")
    tasks = [t for t in TASKS if t[1] in parse_list(args.tasks, str, "--tasks")]
    den = pgdm.load_model("default")
    test = load_fashion_mnist(split="test", size=den.image_size)
    images = to_model_range(test[torch.linspace(0, test.shape[0] - 1, args.n).round().long()])
    rows = []
    for label, spec in tasks:
        op = parse(spec, tuple(images.shape[1:]), seed=args.seed)
        y = op(images)
        print(f"{label}: h†(y) {float(psnr(op.pinv(y).clamp(-1, 1), images).mean()):.2f} dB", flush=True)
        for method, start in runs:
            for n in steps:
                if start is not None and n > start + 1:
                    continue
                restorer = pgdm.Restorer(den, steps=n, start_step=start, method=method.name, options=dict(method.options))
                t0 = time.perf_counter()
                x = restorer.restore(y, op, seed=args.seed)
                seconds = time.perf_counter() - t0
                row = {"task": label, "method": method.label + (f"@{start}" if start is not None else ""), "steps": n,
                       "psnr": round(float(psnr(x, images).mean()), 2), "seconds": round(seconds, 2)}  # fmt: skip
                rows.append(row)
                print(f"  {row['method']:28s} {n:4d} steps  {row['psnr']:6.2f} dB  {seconds:6.1f} s", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=False)
        with open(args.out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
