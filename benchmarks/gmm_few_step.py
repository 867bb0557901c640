"""Few-step sampling on the analytic Gaussian-mixture prior: sliced W2 to the exact posterior per method and step count.

Usage: python benchmarks/gmm_few_step.py [--n 1000] [--methods pigdm,cpigdm,cpigdm:w=1] [--steps 5,10,20,100]
Prints a Markdown table (pgdm.entrypoints.bench.posterior cells: 8×8 mixture prior, one measurement, clip_denoised=False).
"""
import argparse

from pgdm.entrypoints.bench.cells import parse_list, parse_methods
from pgdm.entrypoints.bench.posterior import TASKS, posterior_cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="samples per cell")
    ap.add_argument("--methods", default="pigdm,cpigdm")
    ap.add_argument("--steps", default="5,10,20,100")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    specs, steps, tasks = parse_methods(args.methods), parse_list(args.steps, int, "--steps"), parse_list(args.tasks, str, "--tasks")
    print("| task | method | " + " | ".join(f"{s} steps" for s in steps) + " | floor |")
    print("|---|---|" + "---|" * (len(steps) + 1))
    for task in tasks:
        for spec in specs:
            cells = [posterior_cell(spec, task, s, n=args.n) for s in steps]
            w2 = " | ".join(f"{c['sliced_w2']:.3f}" if c["status"] == "ok" else "n/a" for c in cells)
            print(f"| {task} | {spec.label} | {w2} | {cells[0].get('floor', float('nan')):.3f} |", flush=True)


if __name__ == "__main__":
    main()
