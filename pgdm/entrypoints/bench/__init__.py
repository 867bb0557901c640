"""``pgdm bench``: restoration methods side by side, on real images (``quality``) and on an analytic prior (``posterior``);
``tune`` picks a method's per-task option on train images.

Both write into ``--output``: ``cells.jsonl`` (finished cells; a rerun skips them, so an interrupted run resumes),
``results.csv``, ``results.json``, ``results.md`` and PNG plots (``quality``: of the command's grid, then the
folder's other finished cells at the same ``--n``, so that commands with different grids build one table). Cells a
method cannot run are kept and marked "unsupported" with the reason. docs/methods.md describes the methods and their settings.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from .cells import CellStore, MethodSpec, parse_list, parse_methods, plot_lines, write_tables

__all__ = ["add_parser", "run_quality", "run_posterior"]

QUALITY_COLUMNS = ["method", "task", "steps", "sigma_y", "n", "status", "psnr", "ssim", "ca", "kid", "kid_std", "fid", "lpips", "consistency",
                   "nfe", "vjp", "seconds_per_image", "frontier", "compile_seconds", "reason"]  # fmt: skip
QUALITY_PLOTS = ("psnr", "ssim", "ca", "fid", "kid")
POSTERIOR_COLUMNS = ["method", "task", "steps", "sigma_y", "n", "status", "sliced_w2", "floor", "residual", "reason"]


def add_parser(subparsers) -> None:
    """Add ``bench quality`` and ``bench posterior`` to the ``pgdm`` command's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    bench = subparsers.add_parser("bench", help="compare restoration methods (quality on images, or against an exact posterior)",
                                  description="Compare restoration methods in one engine, on the same model, seeds and operators.",
                                  formatter_class=raw, epilog="examples:\n  pgdm bench quality --methods pigdm,ddnm --steps 20 --tasks sr4 --n 8 -o bench/\n"
                                  "  pgdm bench posterior --methods pigdm,ddrm --steps 20 --n 128 -o bench_post/")  # fmt: skip
    kinds = bench.add_subparsers(dest="bench", required=True)
    methods_help = ("comma-separated methods, each NAME[:OPTION=VALUE…][@START] (START: begin at h†(y) noised to that timestep), "
                    "e.g. pigdm,rg,pigdm:weight=2,cpigdm@400 (default: %(default)s)")

    q = kinds.add_parser("quality", formatter_class=raw, help="PSNR/SSIM/CA/FID/KID/consistency/speed per method × steps × task × σ_y",
                         epilog="example:\n  pgdm bench quality --methods pigdm,ddnm --steps 20 --tasks sr4 --n 8 -o bench/")  # fmt: skip
    q.add_argument("--methods", default="pigdm,rg,dps,ddnm,diffpir,ddrm", help=methods_help)
    q.add_argument("--steps", default="20,50,100,1000", help="comma-separated step counts (default: %(default)s)")
    q.add_argument("--tasks", default="sr4,blur-uniform9,inpaint-center,jpeg10", help="comma-separated operator specs (default: %(default)s)")
    q.add_argument("--sigma-y", default="0,0.05", help="comma-separated σ_y on the [0, 1] pixel scale (default: %(default)s)")
    q.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' (test split) or a folder of images (default: %(default)s)")
    q.add_argument("--n", type=int, default=64, help="images per cell (default: %(default)s)")
    q.add_argument("--model", default="default", help="model name or checkpoint, as for `pgdm restore` (default: %(default)s)")
    q.add_argument("--backend", choices=["eager", "compile", "cudagraph"], default="eager", help="engine backend (default: %(default)s)")
    q.add_argument("--batch-size", type=int, default=16, help="images restored together (default: %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    q.add_argument("--inception-weights", metavar="FILE", help="local FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for "
                   "FID/KID with torchmetrics' Inception network; without it 32×32 grayscale images use the shipped Fashion-MNIST classifier")  # fmt: skip
    q.add_argument("--lpips-weights", metavar="FILE", help="local torchvision AlexNet weights (alexnet-owt-7be5be79.pth) for LPIPS; "
                   "without it LPIPS is left out with a note")  # fmt: skip
    q.add_argument("-o", "--output", required=True, type=Path, help="output folder (resumable)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(run=run_quality)

    p = kinds.add_parser("posterior", formatter_class=raw, help="sliced W2 to the exact posterior of an analytic Gaussian-mixture prior",
                         epilog="example:\n  pgdm bench posterior --methods pigdm,ddrm --steps 20 --n 128 -o bench_post/")  # fmt: skip
    p.add_argument("--methods", default="pigdm,rg,dps,ddnm,ddnm+,diffpir,ddrm", help=methods_help)
    p.add_argument("--steps", default="20,100", help="comma-separated step counts (default: %(default)s)")
    p.add_argument("--tasks", default="inpaint,sr4,inpaint-noisy", help="comma-separated tasks: inpaint, sr4, inpaint-noisy (default: %(default)s)")
    p.add_argument("--n", type=int, default=1000, help="samples per cell (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (resumable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_posterior)

    from .tune import add_tune_parser

    add_tune_parser(kinds, raw)


def _grid(args) -> tuple[list[MethodSpec], list[int]]:
    methods = parse_methods(args.methods)
    if not methods:
        raise ValueError("--methods must name at least one method")
    steps = parse_list(args.steps, int, "--steps")
    if args.n < 1 or min(steps) < 1:
        raise ValueError("--n and --steps must be positive")
    return methods, steps


def run_quality(args) -> int:
    """``pgdm bench quality``: run the missing cells, then rewrite tables and plots from all finished cells."""
    import pgdm.engine as E

    from pgdm.models import load_model
    from pgdm.lpips import LPIPS, lpips_unavailable
    from .quality import distribution_scorer, load_images, mark_frontier, quality_cell, threads_note

    methods, steps = _grid(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sigmas = parse_list(args.sigma_y, float, "--sigma-y")
    if min(sigmas) < 0:
        raise ValueError("--sigma-y values must be ≥ 0")
    store = CellStore(args.output, ("method", "task", "steps", "sigma_y", "n"))
    den = load_model(args.model).to(args.device).eval()
    images = load_images(args.data, args.n, den.channels, den.image_size)
    scorer, scorer_note = distribution_scorer(args.data, images, args.inception_weights)
    lpips_note = lpips_unavailable(args.lpips_weights)
    lpips = LPIPS(args.lpips_weights).to(args.device) if lpips_note is None else None
    engines: dict[tuple, E.Engine] = {}

    def engine_for(spec: MethodSpec, n_steps: int) -> E.Engine:
        key = (spec.label, n_steps)
        if key not in engines:
            engines[key] = E.restorer(den, args.backend, steps=n_steps, method=spec.name, method_options=dict(spec.options),
                                      start_step=spec.start_step, batch_sizes=(args.batch_size,),
                                      end_on_measurement=False)  # fmt: skip  (each method as published: no ending on y)
        return engines[key]

    cells = [dict(method=m.label, task=t, steps=s, sigma_y=sy, n=args.n, spec=m) for m in methods for s in steps for t in tasks for sy in sigmas]
    todo = [c for c in cells if not store.done(c)]
    for c in tqdm(todo, desc="bench quality", unit="cell", disable=args.quiet):
        store.add(quality_cell(engine_for, c["spec"], c["task"], c["steps"], c["sigma_y"], images, args.batch_size, args.device, scorer, lpips))
    grid = {store.key(c) for c in cells}  # then the folder's other finished cells at this n: several grids, one table
    rows = [dict(store.rows[store.key(c)]) for c in cells]
    rows += [dict(r) for k, r in store.rows.items() if k not in grid and r["n"] == args.n]
    mark_frontier(rows)
    notes = [f"model {args.model}, data {args.data} (first {args.n}), backend {args.backend}, batch {args.batch_size}, {threads_note()}",
             "methods start from pure noise at t = T−1 unless their label ends in @START (h†(y) noised to timestep START), with their "
             "reference defaults; NFE = network evaluations per image",
             "seconds_per_image excludes compile_seconds (the engine's warm-up)", scorer_note,
             "frontier: the metrics on whose quality-per-second frontier the cell lies (within its task and σ_y, no cell is "
             "as fast and as good)"]  # fmt: skip
    if lpips_note is not None:
        notes.append(lpips_note + " (--lpips-weights FILE)")
    write_tables(args.output, rows, QUALITY_COLUMNS, "pgdm bench quality", notes)
    for y in QUALITY_PLOTS:
        plot_lines(args.output / f"{y}_vs_nfe.png", rows, "nfe", y, "task", "method", "sigma_y")
        plot_lines(args.output / f"{y}_vs_seconds.png", rows, "seconds_per_image", y, "task", "method", "sigma_y")
    print(f"{len(todo)} cell(s) run, {len(cells) - len(todo)} already done; results in {args.output}/results.md")
    return 0


def run_posterior(args) -> int:
    """``pgdm bench posterior``: run the missing cells, then rewrite the table and plot."""
    from .posterior import TASKS, posterior_cell

    methods, steps = _grid(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown posterior task(s) {', '.join(unknown)}; expected {', '.join(TASKS)}")
    store = CellStore(args.output, ("method", "task", "steps", "n"))
    cells = [dict(method=m.label, task=t, steps=s, n=args.n, spec=m) for m in methods for s in steps for t in tasks]
    todo = [c for c in cells if not store.done(c)]
    for c in tqdm(todo, desc="bench posterior", unit="cell", disable=args.quiet):
        store.add(posterior_cell(c["spec"], c["task"], c["steps"], args.n))
    rows = [store.rows[store.key(c)] for c in cells]
    notes = ["prior: 3-component Gaussian mixture on 8×8 images (exact ε); one measurement; clip_denoised=False",
             "floor: sliced W2 between two independent sets of n exact posterior draws"]  # fmt: skip
    write_tables(args.output, rows, POSTERIOR_COLUMNS, "pgdm bench posterior", notes)
    plot_lines(args.output / "sliced_w2_vs_steps.png", rows, "steps", "sliced_w2", "task", "method")
    print(f"{len(todo)} cell(s) run, {len(cells) - len(todo)} already done; results in {args.output}/results.md")
    return 0
