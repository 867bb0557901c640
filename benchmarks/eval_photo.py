"""The photo model on the whole held-out photos, through the canvas denoiser, against what a user would otherwise do.

The photos kept out of the photo model's training (``pgdm.data.PHOTO_HELD_OUT``: chelsea 300×451, flower
427×640), restored at their own size (less one pixel row or column where odd, for SR×2: 300×450 and 426×640; or
downscaled by ``--downscale``) by :class:`pgdm.canvas.CanvasDenoiser` — overlapping 32×32 tiles (``tiles``) or the
network on the whole photo (``whole``). Per task and photo, PSNR/SSIM (torchmetrics, [0, 1] scale) of the
baseline, of one ΠGDM posterior sample and of the mean of K samples, and the gradient energy (mean squared finite
difference, [0, 1] scale) of the sample and of the mean:

- denoising σ_y = 0.1 ([0, 1] scale): the noisy input itself, clipped to [0, 1] as an image file holds it;
- JPEG QF10: the decoded JPEG (libjpeg);
- SR×2 (anti-aliased bicubic kernel): Pillow's bicubic upscaling of the 8-bit measurement;
- inpainting of a 30 % random pixel mask: scikit-image's ``inpaint_biharmonic`` (OpenCV is not installed here).

    OMP_NUM_THREADS=1 python benchmarks/eval_photo.py --steps 10 --samples 2 --overlap 4 --out benchmarks/results/photo_full

Results are written to ``--out``/results.json after every task and photo, so a stopped run keeps what it finished.
``--grid`` writes one row per photo and task: the measurement as it looks, the baseline, one ΠGDM sample, the
mean of K, the clean photo.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pgdm
from pgdm.canvas import CanvasDenoiser
from pgdm.data import PHOTO_HELD_OUT, downscale, load_photo, to_model_range
from pgdm.grids import measurement_view, write_grid
from pgdm.metrics import psnr, ssim
from pgdm.ops import GaussianNoise, Inpaint, parse, random_pixel_mask
from pgdm.sampler import end_on_measurement, summarize_samples

# (label, spec, sigma_y on the [0, 1] pixel scale, baseline name)
TASKS = [
    ("denoising σ_y = 0.1", "denoise", 0.1, "noisy input"),
    ("JPEG QF10", "jpeg10", 0.0, "decoded JPEG"),
    ("SR×2 (bicubic kernel)", "sr2-bicubic", 0.0, "Pillow bicubic"),
    ("inpainting, 30 % random pixels", "inpaint-random0.3", 0.0, "skimage biharmonic"),
]
GRID_LABELS = ["y (measured)", "baseline", "one sample", "mean of K", "clean"]  # ASCII: the default font has no "Π"


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean squared horizontal + vertical finite difference per image, on the [0, 1] scale: (B, C, H, W) → (B,)."""
    u = (x.double() + 1) / 2
    return (u.diff(dim=-1).square().mean((1, 2, 3)) + u.diff(dim=-2).square().mean((1, 2, 3))).float()


def _to_unit_hwc(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).double().numpy()  # (H, W, C) in [0, 1]


def _from_unit_hwc(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32)).permute(2, 0, 1) * 2 - 1


def pillow_bicubic(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) in [-1, 1] → (B, C, H, W), ``size`` = (H, W): each image rounded to 8 bits and upscaled by Pillow's bicubic."""
    out = []
    for img in y:
        u8 = (_to_unit_hwc(img) * 255).round().astype(np.uint8)
        up = np.asarray(Image.fromarray(u8).resize((size[1], size[0]), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        out.append(_from_unit_hwc(up))
    return torch.stack(out)


def biharmonic_inpaint(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) masked images and (B, 1, H, W) masks (1 = observed) → scikit-image biharmonic inpainting."""
    from skimage.restoration import inpaint_biharmonic

    out = []
    for img, m in zip(y, mask):
        filled = inpaint_biharmonic(_to_unit_hwc(img), m[0].numpy() == 0, channel_axis=-1)
        out.append(_from_unit_hwc(np.clip(filled, 0, 1)))
    return torch.stack(out)


def baseline(spec: str, op, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What a user would otherwise do with the measurement y: (B, C, H, W) in [-1, 1], ``size`` = (H, W)."""
    if spec == "denoise":
        return y.clamp(-1, 1)
    if spec.startswith("sr"):
        return pillow_bicubic(y, size)
    if spec.startswith("inpaint"):
        return biharmonic_inpaint(y, op.mask.expand(y.shape[0], 1, *size))
    return op.pinv(y).clamp(-1, 1)  # JPEG: libjpeg's decoder


def held_out_photos(factor: float = 1.0) -> dict[str, torch.Tensor]:
    """name → (1, 3, H, W) float in [-1, 1]: each held-out photo downscaled by ``factor`` (1: full size), less its
    last row or column where H or W is odd (SR×2 needs even sides)."""
    photos = {}
    for name in PHOTO_HELD_OUT:
        photo = load_photo(name)
        if factor != 1.0:
            photo = downscale(photo, factor)
        h, w = photo.shape[1] // 2 * 2, photo.shape[2] // 2 * 2
        photos[name] = to_model_range(photo[None, :, :h, :w])
    return photos


def evaluate_one(restorer: pgdm.Restorer, spec: str, sigma_y: float, x: torch.Tensor, samples: int, seed: int, log_every: int):
    """Restore photo x: (1, 3, H, W) in [-1, 1] under ``spec``: (op, y, the K samples (K, 3, H, W) clamped, their mean (1, 3, H, W))."""
    h, w = x.shape[-2:]
    op = Inpaint(random_pixel_mask(h, w, 0.3, seed=seed)) if spec == "inpaint-random0.3" else parse(spec, (3, h, w), seed=seed)
    y = op(x)
    if sigma_y:
        y = GaussianNoise(sigma_y, seed=seed)(y)
    plan = restorer.plan(y, op, sigma_y, seed, num_samples=samples)
    start = time.perf_counter()

    def report(info: dict) -> None:
        if log_every and (info["i"] + 1) % log_every == 0:
            print(f"    step {info['i'] + 1}/{restorer.steps}: {time.perf_counter() - start:.0f} s", flush=True)

    draws = end_on_measurement(plan, restorer.run_plan(plan, report))  # (K, C, H, W): sample k at row k
    mean = summarize_samples(draws, samples, return_std=False)
    return op, y, draws.clamp(-1, 1), mean


def evaluate(
    restorer: pgdm.Restorer, photos: dict[str, torch.Tensor], tasks: list[tuple], samples: int, seed: int, out: Path | None = None,
    settings: dict | None = None, log_every: int = 5,
) -> tuple[list[dict], list[list[torch.Tensor]], list[str]]:
    """(one dict per photo and task, grid rows, row labels); ``out``/results.json ({"settings", "tasks"}) after each.
    Photo by photo, the smallest first: a stopped run has every task of the photos it finished."""
    rows, grid, labels = [], [], []
    for name, x in sorted(photos.items(), key=lambda item: item[1].numel()):
        for label, spec, sigma_y, base_name in tasks:
            start = time.perf_counter()
            op, y, draws, mean = evaluate_one(restorer, spec, sigma_y, x, samples, seed, log_every)
            seconds = time.perf_counter() - start
            one = draws[:1]
            base = baseline(spec, op, y, tuple(x.shape[-2:]))
            row = {
                "task": label, "spec": spec, "photo": name, "size": list(x.shape[-2:]), "sigma_y": sigma_y, "baseline": base_name,
                "baseline_psnr": float(psnr(base, x)[0]), "baseline_ssim": float(ssim(base, x)[0]),
                "pinv_psnr": float(psnr(op.pinv(y).clamp(-1, 1), x)[0]),
                "sample_psnr": float(psnr(one, x)[0]), "sample_ssim": float(ssim(one, x)[0]),
                "sample_psnr_each": [round(float(v), 3) for v in psnr(draws, x.expand_as(draws))],
                "mean_psnr": float(psnr(mean, x)[0]), "mean_ssim": float(ssim(mean, x)[0]),
                "sample_grad_energy": float(gradient_energy(one)[0]), "mean_grad_energy": float(gradient_energy(mean)[0]),
                "clean_grad_energy": float(gradient_energy(x)[0]), "seconds": round(seconds, 1),
            }  # fmt: skip
            rows.append(row)
            grid.append([measurement_view(y, op, tuple(x.shape[-2:])), base[0], one[0], mean[0], x[0]])
            labels.append(f"{spec}, {name}")
            print(
                f"{label:32s} {name:8s} {base_name:18s} {row['baseline_psnr']:6.2f} dB {row['baseline_ssim']:.3f} | sample "
                f"{row['sample_psnr']:6.2f} dB {row['sample_ssim']:.3f} | mean of {samples} {row['mean_psnr']:6.2f} dB {row['mean_ssim']:.3f} | "
                f"grad energy sample {row['sample_grad_energy']:.4f} mean {row['mean_grad_energy']:.4f} clean {row['clean_grad_energy']:.4f} | "
                f"{seconds:.0f} s",
                flush=True,
            )
            if out is not None:
                (out / "results.json").write_text(json.dumps({"settings": settings, "tasks": rows}, indent=2) + "\n")
    return rows, grid, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="photo", help="model name or checkpoint (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="ΠGDM steps (default: %(default)s)")
    p.add_argument("--samples", type=int, default=2, help="posterior samples averaged for the mean (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of masks, noise and sampling (default: %(default)s)")
    p.add_argument("--downscale", type=float, default=1.0, help="downscale the photos by this factor first (default: full size)")
    p.add_argument("--tasks", nargs="+", choices=[t[1] for t in TASKS], help="the tasks to run (default: all)")
    p.add_argument("--strategy", choices=("tiles", "whole"), default="tiles", help="canvas strategy (default: %(default)s)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: a quarter of the tile)")
    p.add_argument("--max-rows", type=int, default=64, help="tiles per network call; more tiles than this are checkpointed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, help="folder for results.json")
    p.add_argument("--grid", type=Path, help="write a grid PNG: one row per photo and task")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [t for t in TASKS if args.tasks is None or t[1] in args.tasks]
    canvas = CanvasDenoiser(pgdm.load_model(args.model), args.strategy, overlap=args.overlap, max_rows=args.max_rows)
    restorer = pgdm.Restorer(canvas, steps=args.steps, eta=1.0)
    photos = held_out_photos(args.downscale)
    sizes = {n: tuple(x.shape[-2:]) for n, x in photos.items()}
    settings = dict(model=args.model, photos={n: list(s) for n, s in sizes.items()}, downscale=args.downscale, steps=args.steps,
                    samples=args.samples, seed=args.seed, strategy=args.strategy, overlap=canvas.overlap, max_rows=args.max_rows,
                    tiles_per_step={n: canvas.tiles_per_image(*s) for n, s in sizes.items()}, threads=torch.get_num_threads())  # fmt: skip
    print(settings, flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    rows, grid, labels = evaluate(restorer, photos, tasks, args.samples, args.seed, args.out, settings)
    if args.grid:
        print(f"wrote {write_grid(grid, GRID_LABELS, args.grid, row_labels=labels)}")


if __name__ == "__main__":
    main()
