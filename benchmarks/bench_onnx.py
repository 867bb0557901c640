"""A whole restore with the exported ONNX step in ONNX Runtime against ``pgdm.Restorer`` (CPU).

    OMP_NUM_THREADS=2 python benchmarks/bench_onnx.py --task sr4 --batch 16 --steps 20 --reps 4

Exports the default model's step for TASK at BATCH (reported apart), then times restores of STEPS steps
with ONNX Runtime (CPU provider, as many threads as torch) and with the eager float32 ``Restorer``, each
from y to the restored images, called in turn (medians).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from timing import interleaved_ms

from pgdm import Restorer, load_model
from pgdm.export import OnnxStepRestorer, export_step
from pgdm.ops import parse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="sr4")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=4)
    args = p.parse_args(argv)
    den = load_model("default")
    c, s = den.channels, den.image_size
    op = parse(args.task, (c, s, s))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        runner = OnnxStepRestorer(export_step(den, op, Path(tmp) / "step.onnx", args.batch), den, steps=args.steps, threads=torch.get_num_threads())
        export_s = time.perf_counter() - start
    y = op(torch.rand(args.batch, c, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    ref = Restorer(den, steps=args.steps)
    onnx = lambda: runner.restore(y, op, seed=0)  # noqa: E731
    calls = {"onnxruntime": onnx, "Restorer": lambda: ref.restore(y, op, seed=0)}
    for call in calls.values():
        call()
    ms = interleaved_ms(calls, "cpu", args.reps)
    print(f"# {args.task}, batch {args.batch}, {args.steps} steps, torch {torch.get_num_threads()} threads; export {export_s:.1f} s")
    for name, v in ms.items():
        print(f"{name:12s} {v / 1e3:.3f} s per restore")


if __name__ == "__main__":
    main()
