"""Images of any size with a fixed-size model (pgdm.canvas): accuracy, quality, seams, memory and time.

Sections (``--what``, any of them):

* ``analytic``: the stationary Gaussian prior of ``pgdm.analytic`` (1/f^α spectrum, exact ε on any canvas). (a) The
  tiled denoiser's relative error ‖ε_tiles − ε_exact‖/‖ε_exact‖ against the exact whole-canvas ε, by tile size and
  overlap, at three timesteps, on x_t drawn exactly. (b) ΠGDM (20 steps, clip_denoised=False) on a canvas of 4× the
  tile's area, SR×4: sliced W2 of n samples to n exact posterior draws (Matheron's rule), tiled vs whole-canvas with
  the exact ε; ``floor`` is two exact sets against each other. (c) the seam ratio on the samples.
* ``quality``: the default model on Fashion-MNIST test mosaics (2×3 and 3×5 images of 32×32): each task's canvas
  restore (``tiles``: overlap 8, shifted grid; ``tiles-fixed``: overlap 8, fixed grid; ``tiles-aligned``: overlap 0,
  fixed grid, i.e. one tile per mosaic image; ``whole``) against restoring each image alone from the same
  measurement (deblurring: each image blurred by itself, σ_y = 0.05, the same noise; the blur of the whole canvas
  compares strategies only), PSNR (dB) per image on [0, 1] of the mean of K samples; the seam ratio; and the edge
  ratio (:func:`edge_ratio`: the error on image borders at the canvas edge over that on inner ones). ``--pictures``
  writes the first mosaic's restores as one PNG (per task: measurement, canvas runs, alone, clean).
* ``memory``: peak RSS (each run in a fresh process) of a tiled restore (``--memory-steps`` steps, ``--max-rows``
  tiles per network call) of canvases of ``--memory-sizes`` (SR×4, default model), and of loading alone.
* ``time``: seconds per ΠGDM step against canvas area (64² … 1024², SR×4) with the log-log slope above 64 tiles,
  and tiles/s of a tiled canvas against images/s of model-sized images at the same network batch (``--batches``);
  each run ``--rounds`` times, interleaved, min and median.

The seam ratio is the mean |difference between neighbouring pixels| across the tile borders of the last step's grid
over the mean elsewhere (1: no seam).

    OMP_NUM_THREADS=2 python benchmarks/bench_canvas.py --what analytic quality memory time
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import pgdm
from pgdm.analytic import sliced_w2, stationary_denoiser, stationary_posterior_samples
from pgdm.canvas import CanvasDenoiser
from pgdm.ops import Inpaint, LinearOperator, center_box_mask, parse, random_pixel_mask
from pgdm.sampler import SamplerSettings, plan_sampling, run_eager


def seam_ratio(x: torch.Tensor, den: CanvasDenoiser, t_last: int) -> float:
    """Mean |x[i] − x[i−1]| across the tile borders of the grid at timestep ``t_last`` over the mean elsewhere,
    both axes pooled. x: (B, C, H, W)."""
    h, w = x.shape[-2:]
    if den.strategy_for(h, w) != "tiles":
        return float("nan")
    t = torch.tensor([t_last])
    border_sum, border_n, other_sum, other_n = 0.0, 0, 0.0, 0
    for axis, grid in zip((2, 3), den.grids(h, w)):
        starts, _, to_extent = den._layout(t, grid, axis - 2)  # tile starts in the extent; canvas → extent
        at = 0 if to_extent is None else int(to_extent[0])  # the canvas's start in the extent
        edges = set()
        for a in starts.tolist():  # tile k spans canvas [starts[k] − at, starts[k] − at + tile)
            for e in (a - at, a - at + grid.tile):
                if 0 < e < x.shape[axis]:
                    edges.add(e)
        diff = (x.narrow(axis, 1, x.shape[axis] - 1) - x.narrow(axis, 0, x.shape[axis] - 1)).abs()  # diff[i−1] = |x[i] − x[i−1]|
        per_line = diff.transpose(axis, -1).flatten(0, -2).mean(0)  # (size − 1,)
        mask = torch.zeros_like(per_line, dtype=torch.bool)
        mask[[e - 1 for e in sorted(edges)]] = True
        border_sum += float(per_line[mask].sum())
        border_n += int(mask.sum())
        other_sum += float(per_line[~mask].sum())
        other_n += int((~mask).sum())
    return (border_sum / max(border_n, 1)) / (other_sum / max(other_n, 1))


# ---------------------------------------------------------------------------------------------- analytic


def analytic(args) -> dict:
    kw = dict(alpha=args.alpha, cutoff=args.cutoff, std=0.5)
    exact = stationary_denoiser(1, None, **kw)
    prior = exact.net
    out = {"prior": kw, "eps_error": [], "posterior": []}
    gen = torch.Generator().manual_seed(0)
    for tile in args.tiles:
        size = 2 * tile
        x0 = prior.sample(32, (1, size, size), gen)
        fixed = stationary_denoiser(1, tile, **kw)
        for t in (100, 300, 600):
            a = exact.alphas_cumprod[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            tt = torch.full((32,), t)
            e = exact(xt, tt)
            for overlap in sorted({0, tile // 8, tile // 4, 3 * tile // 8, tile // 2}):
                den = CanvasDenoiser(fixed, "tiles", overlap=overlap, shift=False, edges="circular")
                err = float((den(xt, tt) - e).norm() / e.norm())
                out["eps_error"].append({"tile": tile, "canvas": size, "t": t, "overlap": overlap, "rel_error": err})
                print(f"eps  tile {tile:3d} canvas {size}² t {t:4d} overlap {overlap:2d}: {err:.4f}", flush=True)
    tile, n = args.posterior_tile, args.n
    size = 2 * tile
    fixed = stationary_denoiser(1, tile, **kw)
    op = pgdm.ops.SuperResolution(4).double()
    y = op(prior.sample(1, (1, size, size), torch.Generator().manual_seed(7)))
    ref = stationary_posterior_samples(prior, op, y, 0.0, n, torch.Generator().manual_seed(100)).flatten(1)
    other = stationary_posterior_samples(prior, op, y, 0.0, n, torch.Generator().manual_seed(200)).flatten(1)
    floor = sliced_w2(other, ref)
    print(f"posterior tile {tile} canvas {size}² n {n}: floor {floor:.4f}", flush=True)
    settings = SamplerSettings("pigdm", steps=args.steps, clip_denoised=False)
    runs = [("whole, exact ε", exact)] + [
        (f"tiles, overlap {o}{', shifted' if s else ''}", CanvasDenoiser(fixed, "tiles", overlap=o, shift=s, edges="circular"))
        for o, s in ((0, False), (tile // 4, False), (tile // 4, True), (tile // 2, True))
    ]
    for label, den in runs:
        start = time.perf_counter()
        plan = plan_sampling(den, y.expand(n, *y.shape[1:]), op, settings, seed=0, dtype=torch.float64)
        with torch.no_grad():
            xs = run_eager(den, plan)
        w2 = sliced_w2(xs.flatten(1), ref)
        seams = seam_ratio(xs, den, 0) if isinstance(den, CanvasDenoiser) else float("nan")
        row = {"run": label, "sliced_w2": w2, "floor": floor, "seam_ratio": seams, "seconds": time.perf_counter() - start}
        out["posterior"].append(row)
        print(f"posterior {label:28s}: sliced W2 {w2:.4f}  seam ratio {seams:.3f}  ({row['seconds']:.0f} s)", flush=True)
    return out


# ---------------------------------------------------------------------------------------------- quality


def mosaic(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows·cols, C, h, w) → (1, C, rows·h, cols·w), row-major."""
    n, c, h, w = x.shape
    return x.view(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, rows * h, cols * w)


def unmosaic(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(1, C, rows·h, cols·w) → (rows·cols, C, h, w)."""
    _, c, hh, ww = x.shape
    h, w = hh // rows, ww // cols
    return x.view(c, rows, h, cols, w).permute(1, 3, 0, 2, 4).reshape(rows * cols, c, h, w)


class PerImage(LinearOperator):
    """A linear operator applied to each model-sized image of a (rows × cols) mosaic by itself: y = mosaic(h(unmosaic(x))).

    The canvas measured image by image: the same numbers as measuring each image alone, rearranged, so a canvas
    restore and per-image restores start from the same information (a blur of the whole canvas mixes neighbours)."""

    def __init__(self, op: LinearOperator, rows: int, cols: int) -> None:
        super().__init__()
        self.op, self.rows, self.cols, self.family = op, rows, cols, op.family

    @property
    def spec(self) -> str:
        return f"{self.op.spec} per image of {self.rows}×{self.cols}"

    def _each(self, fn, v: torch.Tensor) -> torch.Tensor:
        b = v.shape[0]
        out = fn(torch.cat([unmosaic(v[i : i + 1], self.rows, self.cols) for i in range(b)]))
        return torch.cat([mosaic(out[i * self.rows * self.cols : (i + 1) * self.rows * self.cols], self.rows, self.cols) for i in range(b)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._each(self.op, x)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._each(self.op.pinv, y)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._each(self.op.adjoint, y)

    def regularized_pinv(self, v: torch.Tensor, lam) -> torch.Tensor:
        n = self.rows * self.cols
        lam = lam.repeat_interleave(n) if isinstance(lam, torch.Tensor) and lam.ndim == 1 else lam
        return self._each(lambda u: self.op.regularized_pinv(u, lam), v)


DEBLUR_SIGMA = 0.05  # noiseless, a 9×9 box on 32×32 images is exactly invertible (every |K̂| > 0)


def quality_tasks(rows: int, cols: int, seed: int):
    """(label, canvas operator, per-image operator or None, σ_y): the same information in both; the blur of the whole
    canvas (circular, mixing neighbouring images) has no per-image counterpart and compares strategies only."""
    hc, wc = 32 * rows, 32 * cols
    mask = center_box_mask(hc, wc) * random_pixel_mask(hc, wc, 0.5, seed=seed)  # (1, 1, Hc, Wc): box ∪ half the rest hidden
    inpaint_c = Inpaint(mask)
    blur = parse("blur-uniform9", (1, 32, 32))
    return [
        ("SR×4", parse("sr4", (1, hc, wc)), parse("sr4", (1, 32, 32)), 0.0),
        ("centre box + random 50 % inpainting", inpaint_c, Inpaint(unmosaic(mask, rows, cols)), 0.0),
        ("JPEG QF10", parse("jpeg10", (1, hc, wc)), parse("jpeg10", (1, 32, 32)), 0.0),
        ("uniform 9×9 deblurring, image by image", PerImage(blur, rows, cols), blur, DEBLUR_SIGMA),
        ("uniform 9×9 deblurring of the whole canvas", parse("blur-uniform9", (1, hc, wc)), None, DEBLUR_SIGMA),
    ]


CONFIGS = {
    "tiles": {},
    "tiles-reflect": {"edges": "reflect"},  # tiles running over a mirrored margin past the canvas edge
    "tiles-fixed": {"shift": False},
    "tiles-aligned": {"shift": False, "overlap": 0},  # the grid on the mosaic's own images
    "whole": {"strategy": "whole"},
}


def edge_ratio(x: torch.Tensor, clean: torch.Tensor, rows: int, cols: int, width: int = 4) -> float:
    """Mean |x − clean| on the mosaic images' outer ``width``-pixel strips that lie on the canvas edge over the mean
    on those inside the canvas (the same kind of content: every image's border), so 1 when the canvas edge restores
    like an inner border. x, clean: (B, C, 32·rows, 32·cols)."""
    err = (x - clean).abs().mean(dim=(0, 1))  # (H, W)
    strip = torch.zeros(32, 32, dtype=torch.bool)
    strip[:width] = strip[-width:] = True
    strip[:, :width] = strip[:, -width:] = True
    strips = strip.repeat(rows, cols)
    edge = torch.ones_like(strips)
    edge[width:-width, width:-width] = False
    return float(err[strips & edge].mean() / err[strips & ~edge].mean())


def quality(args) -> dict:
    from pgdm.data import load_fashion_mnist, to_model_range
    from pgdm.metrics import psnr

    den = pgdm.load_model("default")
    out, pictures = [], []
    for rows, cols in args.mosaics:
        n = rows * cols
        test = to_model_range(load_fashion_mnist(split="test"))
        images = test[torch.linspace(0, len(test) - 1, n).long()]
        canvas_x = mosaic(images, rows, cols)
        for label, op_c, op_1, sigma in quality_tasks(rows, cols, args.seed):
            if args.tasks and not any(label.startswith(t) for t in args.tasks):
                continue
            noise = sigma * torch.randn(op_c(canvas_x).shape, generator=torch.Generator().manual_seed(args.seed))
            y_c = op_c(canvas_x) + noise  # the per-image measurements get the same noise, image by image
            row = {"mosaic": f"{rows}×{cols}", "task": label, "sigma_y": sigma, "steps": args.steps, "samples": args.samples}
            view = op_c.measurement_view(y_c)
            picture = [F.interpolate(view, size=canvas_x.shape[-2:], mode="nearest")]
            if op_1 is not None:
                start = time.perf_counter()
                y_1 = op_1(images) + unmosaic(noise, rows, cols) if sigma else op_1(images)
                alone = pgdm.Restorer(den, steps=args.steps).restore(y_1, op_1, sigma, seed=args.seed, num_samples=args.samples)
                row["alone"] = float(psnr(alone, images).mean())
                row["alone_s"] = time.perf_counter() - start
                row["alone_edge"] = edge_ratio(mosaic(alone, rows, cols), canvas_x, rows, cols)
            for name, kw in CONFIGS.items():
                if name not in args.configs:
                    continue
                cden = CanvasDenoiser(den, kw.get("strategy", "tiles"), overlap=kw.get("overlap", 8), shift=kw.get("shift", True),
                                      edges=kw.get("edges", "inside"))  # fmt: skip
                start = time.perf_counter()
                x = pgdm.Restorer(cden, steps=args.steps).restore(y_c, op_c, sigma, seed=args.seed, num_samples=args.samples)
                row[name] = float(psnr(unmosaic(x, rows, cols), images).mean())
                row[name + "_s"] = time.perf_counter() - start
                row[name + "_seams"] = seam_ratio(x, cden, 0)
                row[name + "_edge"] = edge_ratio(x, canvas_x, rows, cols)
                picture.append(x)
            picture.append(mosaic(alone, rows, cols) if op_1 is not None else torch.ones_like(canvas_x))
            pictures.append(torch.cat(picture + [canvas_x], dim=-1))
            out.append(row)
            print(json.dumps(row), flush=True)
        if args.pictures and (rows, cols) == args.mosaics[0]:
            _save_pictures(pictures, args.pictures)
    return {"quality": out}


def _save_pictures(rows: list[torch.Tensor], path: str, gap: int = 4) -> None:
    """One PNG: a row per task (measurement, each canvas run, alone, clean, side by side), a white gap between rows,
    each pixel 2×2."""
    from pgdm.io import to_pil

    width = max(r.shape[-1] for r in rows)
    padded = [F.pad(r.clamp(-1, 1), (0, width - r.shape[-1], 0, gap), value=1.0) for r in rows]
    grid = F.interpolate(torch.cat(padded, dim=-2), scale_factor=2, mode="nearest")
    to_pil(grid)[0].save(path)


# ---------------------------------------------------------------------------------------------- memory / time

_CHILD = """
import resource, sys, time, torch
torch.set_num_threads({threads})
import pgdm, pgdm.canvas
den = pgdm.load_model("default")
size = {size}
if size:
    op = pgdm.ops.parse("sr4", (1, size, size))
    y = op(torch.rand(1, 1, size, size) * 2 - 1)
    start = time.perf_counter()
    canvas = pgdm.canvas.CanvasDenoiser(den, max_rows={max_rows})
    pgdm.Restorer(canvas, steps={steps}).restore(y, op, seed=0)
    print("seconds", time.perf_counter() - start)
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(args) -> dict:
    out = []
    for size in [0] + args.memory_sizes:
        code = _CHILD.format(size=size, steps=args.memory_steps, threads=args.threads, max_rows=args.max_rows)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        vals = dict(line.split() for line in proc.stdout.splitlines() if line.split()[0] in ("seconds", "maxrss_kib"))
        tiles = pgdm.canvas.CanvasDenoiser(pgdm.load_model("default")).tiles_per_image(size, size) if size else 0
        row = {"canvas": size or "load only", "tiles": tiles, "steps": args.memory_steps, "max_rows": args.max_rows, "peak_rss_mib": int(vals["maxrss_kib"]) / 1024, "seconds": float(vals.get("seconds", "nan"))}
        out.append(row)
        print(json.dumps(row), flush=True)
    return {"memory": out}


def _step_seconds(den, y: torch.Tensor, op, steps: int = 2) -> float:
    """Seconds per ΠGDM step of a restore (the plan built outside the clock)."""
    plan = plan_sampling(den, y, op, SamplerSettings("pigdm", steps=steps), seed=0)
    start = time.perf_counter()
    run_eager(den, plan)
    return (time.perf_counter() - start) / steps


def _fixed_grid_side(n: int) -> int:
    """The canvas side whose fixed grid (tile 32, overlap 8, stride 24) has n tiles along it: 24n − 8 (32: one tile)."""
    return 32 if n == 1 else 24 * n - 8


def timing(args) -> dict:
    """Seconds per step against canvas area, and tiles/s against images/s at the same network batch: every
    measurement repeated ``--rounds`` times, the runs interleaved (one of each per round), min and median kept."""
    den = pgdm.load_model("default")
    runs = {}  # label → (denoiser, y, op)
    for size in args.time_sizes:
        op = parse("sr4", (1, size, size))
        runs[f"canvas {size}"] = (CanvasDenoiser(den, "tiles"), op(torch.rand(1, 1, size, size) * 2 - 1), op)
    for rows in args.batches:
        op = parse("sr4", (1, 32, 32))
        runs[f"images ×{rows}"] = (den, op(torch.rand(rows, 1, 32, 32) * 2 - 1), op)
        gh = 1 if rows < 4 else 2 if rows < 16 else 4  # a canvas whose fixed grid has exactly `rows` tiles
        hc, wc = _fixed_grid_side(gh), _fixed_grid_side(rows // gh)
        cden = CanvasDenoiser(den, "tiles", overlap=8, shift=False, max_rows=rows)
        assert cden.tiles_per_image(hc, wc) == rows, cden.grids(hc, wc)
        op = parse("sr4", (1, hc, wc))
        runs[f"tiles ×{rows}"] = (cden, op(torch.rand(1, 1, hc, wc) * 2 - 1), op)
    for d, y, op in runs.values():  # warm-up (a large canvas's first step is warm after its first tiles)
        if y.shape[-1] <= 64:
            _step_seconds(d, y, op, steps=1)
    seconds = {label: [] for label in runs}
    for r in range(args.rounds):
        for label, (d, y, op) in runs.items():
            seconds[label].append(_step_seconds(d, y, op))
            print(json.dumps({"round": r, "run": label, "s_per_step": seconds[label][-1]}), flush=True)
    stat = lambda v: {"min": min(v), "median": statistics.median(v)}  # noqa: E731
    out = {"area": [], "throughput": []}
    for size in args.time_sizes:
        d = runs[f"canvas {size}"][0]
        out["area"].append({"canvas": size, "tiles": d.tiles_per_image(size, size), "s_per_step": stat(seconds[f"canvas {size}"])})
    big = [a for a in out["area"] if a["tiles"] > 64]  # checkpointed chunks from 65 tiles on: one more forward per tile
    if len(big) >= 2:  # seconds ∝ area^slope: 1 is linear
        out["log_log_slope"] = float(np.polyfit(np.log([a["canvas"] ** 2 for a in big]), np.log([a["s_per_step"]["min"] for a in big]), 1)[0])
    for rows in args.batches:
        img, til = stat(seconds[f"images ×{rows}"]), stat(seconds[f"tiles ×{rows}"])
        row = {"batch": rows, "images_per_s": {"best": rows / img["min"], "median": rows / img["median"]},
               "tiles_per_s": {"best": rows / til["min"], "median": rows / til["median"]}}
        out["throughput"].append(row)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", nargs="+", default=["analytic"], choices=["analytic", "quality", "memory", "time"])
    p.add_argument("--tiles", type=int, nargs="+", default=[8, 16], help="analytic: tile sizes for the ε error")
    p.add_argument("--posterior-tile", type=int, default=8)
    p.add_argument("--n", type=int, default=400, help="analytic: posterior samples")
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--cutoff", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=4, help="quality: posterior samples averaged")
    p.add_argument("--mosaics", type=lambda s: tuple(int(v) for v in s.split("x")), nargs="+", default=[(2, 3), (3, 5)])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="quality: canvas runs")
    p.add_argument("--pictures", help="quality: write the first mosaic's restores here as one PNG")
    p.add_argument("--tasks", nargs="+", help="quality: task labels to run (prefixes: SR, centre, JPEG, uniform); default all")
    p.add_argument("--memory-sizes", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--max-rows", type=int, default=64, help="memory: tiles per network call")
    p.add_argument("--time-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[4, 16, 32], help="time: network rows per call (the engine's batch sizes)")
    p.add_argument("--rounds", type=int, default=3, help="time: interleaved repetitions")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"args": {k: v for k, v in vars(args).items()}}
    for what, fn in (("analytic", analytic), ("quality", quality), ("memory", memory), ("time", timing)):
        if what in args.what:
            results[what] = fn(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
