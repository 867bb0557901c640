"""How far an image's restoration moves between being restored alone and inside a batch.

Restores the bundled demo images (default model) under each task three ways: one at a time, in batches of
``--batch``, and in batches of ``--batch`` again; prints the largest |Δ| on the [-1, 1] scale and how many 8-bit
output pixels differ. The seeds make the samples the same; what remains is float rounding (the network's
kernels may sum in another order at another batch size).

    OMP_NUM_THREADS=1 python benchmarks/batch_invariance.py --steps 20 --batch 8
"""
from __future__ import annotations

import argparse

import torch

import pgdm
from pgdm.entrypoints.cli import DEMO_IMAGES
from pgdm.io import list_images, read_image, to_uint8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tasks", nargs="+", default=["sr4", "inpaint-center", "jpeg10", "blur-uniform9"])
    args = p.parse_args()
    den = pgdm.load_model("default")
    x = torch.cat([read_image(f, 1) for f in list_images([DEMO_IMAGES])])[: args.batch]
    restorer = pgdm.Restorer(den, steps=args.steps)
    print(f"{'task':16s} {'images':>6s} {'max |alone - batch|':>20s} {'8-bit pixels differing':>23s} {'batch vs batch':>15s}")
    for task in args.tasks:
        op = pgdm.ops.parse(task, tuple(x.shape[1:]))
        y, seeds = op(x), list(range(len(x)))
        alone = torch.cat([restorer.restore(y[i : i + 1], op, seed=[s]) for i, s in enumerate(seeds)])
        batch = restorer.restore(y, op, seed=seeds)
        again = restorer.restore(y, op, seed=seeds)
        pixels = sum(int((to_uint8(a) != to_uint8(b)).sum()) for a, b in zip(alone, batch))
        same = "bitwise equal" if torch.equal(batch, again) else f"{(batch - again).abs().max():.1e}"
        print(f"{task:16s} {len(x):6d} {(alone - batch).abs().max():20.1e} {pixels:23d} {same:>15s}", flush=True)


if __name__ == "__main__":
    main()
