"""The photo model on held-out photo crops against what a user would otherwise do.

Crops (32×32, at the photos' own scale, uniform positions, ``pgdm.data.held_out_crops``) of the photos kept out of
the photo model's training (``pgdm.data.PHOTO_HELD_OUT``: chelsea, flower). Per task, PSNR/SSIM (torchmetrics,
[0, 1] scale) of the baseline, of one ΠGDM posterior sample and of the mean of K samples, and the gradient energy
(mean squared finite difference, [0, 1] scale) of the sample and of the mean:

- denoising σ_y = 0.1 ([0, 1] scale): the noisy input itself, clipped to [0, 1] as an image file holds it;
- JPEG QF10: the decoded JPEG (libjpeg);
- SR×2 (anti-aliased bicubic kernel): Pillow's bicubic upscaling of the 16×16 measurement;
- inpainting of a 30 % random pixel mask (one mask per crop): scikit-image's ``inpaint_biharmonic``
  (OpenCV is not installed here).

    python benchmarks/eval_photo.py --model photo --per-photo 8 --steps 50 --samples 8 --out benchmarks/results/photo \
        --grid docs/photo_tasks.png --grid-crops 2 12

``--grid`` writes one row per task and chosen crop: the measurement as it looks, the baseline, one ΠGDM sample, the
mean of K, the clean crop.
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
from pgdm.data import PHOTO_HELD_OUT, held_out_crops, to_model_range
from pgdm.grids import measurement_view, write_grid
from pgdm.metrics import psnr, ssim
from pgdm.ops import GaussianNoise, Inpaint, parse, random_pixel_mask
from pgdm.sampler import summarize_samples

# (label, spec, sigma_y on the [0, 1] pixel scale, baseline name)
TASKS = [
    ("denoising σ_y = 0.1", "denoise", 0.1, "noisy input"),
    ("JPEG QF10", "jpeg10", 0.0, "decoded JPEG"),
    ("SR×2 (bicubic kernel)", "sr2-bicubic", 0.0, "Pillow bicubic"),
    ("inpainting, 30 % random pixels", "inpaint-random0.3", 0.0, "skimage biharmonic"),
]


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean squared horizontal + vertical finite difference per image, on the [0, 1] scale: (B, C, H, W) → (B,)."""
    u = (x.double() + 1) / 2
    return (u.diff(dim=-1).square().mean((1, 2, 3)) + u.diff(dim=-2).square().mean((1, 2, 3))).float()


def _to_unit_hwc(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).double().numpy()  # (H, W, C) in [0, 1]


def _from_unit_hwc(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32)).permute(2, 0, 1) * 2 - 1


def pillow_bicubic(y: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) in [-1, 1] → (B, C, size, size): each image rounded to 8 bits and upscaled by Pillow's bicubic."""
    out = []
    for img in y:
        u8 = (_to_unit_hwc(img) * 255).round().astype(np.uint8)
        up = np.asarray(Image.fromarray(u8).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
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


def baseline(spec: str, op, y: torch.Tensor, size: int) -> torch.Tensor:
    """What a user would otherwise do with the measurement y: (B, C, size, size) in [-1, 1]."""
    if spec == "denoise":
        return y.clamp(-1, 1)
    if spec.startswith("sr"):
        return pillow_bicubic(y, size)
    if spec.startswith("inpaint"):
        return biharmonic_inpaint(y, op.mask.expand(y.shape[0], 1, size, size))
    return op.pinv(y).clamp(-1, 1)  # JPEG: libjpeg's decoder


GRID_LABELS = ["y (measured)", "baseline", "one sample", "mean of K", "clean"]  # ASCII: the default font has no "Π"


def evaluate(
    denoiser: pgdm.Denoiser, x: torch.Tensor, steps: int, samples: int, seed: int, grid_crops: list[int] | None = None
) -> tuple[list[dict], list[list[torch.Tensor]]]:
    """(one dict per task, grid rows of the ``grid_crops`` per task); x: (B, 3, S, S) float in [-1, 1]."""
    restorer = pgdm.Restorer(denoiser, steps=steps, eta=1.0)
    b, _, s, _ = x.shape
    rows, grid = [], []
    for label, spec, sigma_y, base_name in TASKS:
        if spec.startswith("inpaint-random"):
            op = Inpaint(random_pixel_mask(s, s, 0.3, seed=seed, batch=b))  # one mask per crop
        else:
            op = parse(spec, tuple(x.shape[1:]), seed=seed)
        y = op(x)
        if sigma_y:
            y = GaussianNoise(sigma_y, seed=seed)(y)
        start = time.perf_counter()
        plan = restorer.plan(y, op, sigma_y, seed, num_samples=samples)
        draws = restorer.run_plan(plan)  # (K·B, C, S, S), sample k of image i at row k·B + i
        seconds = time.perf_counter() - start
        mean = summarize_samples(draws, samples, return_std=False)
        one = draws[:b].clamp(-1, 1)
        base = baseline(spec, op, y, s)
        row = {
            "task": label,
            "spec": spec,
            "sigma_y": sigma_y,
            "baseline": base_name,
            "baseline_psnr": float(psnr(base, x).mean()),
            "baseline_ssim": float(ssim(base, x).mean()),
            "pinv_psnr": float(psnr(op.pinv(y).clamp(-1, 1), x).mean()),
            "sample_psnr": float(psnr(one, x).mean()),
            "sample_ssim": float(ssim(one, x).mean()),
            "mean_psnr": float(psnr(mean, x).mean()),
            "mean_ssim": float(ssim(mean, x).mean()),
            "sample_grad_energy": float(gradient_energy(one).mean()),
            "mean_grad_energy": float(gradient_energy(mean).mean()),
            "clean_grad_energy": float(gradient_energy(x).mean()),
            "seconds": round(seconds, 1),
        }
        rows.append(row)
        for i in grid_crops or []:
            view = measurement_view(y[i : i + 1], op, (s, s))
            grid.append([view, base[i], one[i], mean[i], x[i]])
        print(
            f"{label:32s} {base_name:18s} {row['baseline_psnr']:6.2f} dB {row['baseline_ssim']:.3f} | sample {row['sample_psnr']:6.2f} "
            f"dB {row['sample_ssim']:.3f} | mean of {samples} {row['mean_psnr']:6.2f} dB {row['mean_ssim']:.3f} | grad energy "
            f"sample {row['sample_grad_energy']:.4f} mean {row['mean_grad_energy']:.4f} clean {row['clean_grad_energy']:.4f} | {seconds:.0f} s",
            flush=True,
        )
    return rows, grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="photo", help="model name or checkpoint (default: %(default)s)")
    p.add_argument("--per-photo", type=int, default=8, help="crops per held-out photo (default: %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="ΠGDM steps (default: %(default)s)")
    p.add_argument("--samples", type=int, default=8, help="posterior samples averaged for the mean (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of crops, masks, noise and sampling (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, help="folder for results.json")
    p.add_argument("--grid", type=Path, help="write a grid PNG: one row per task and --grid-crops crop")
    p.add_argument("--grid-crops", type=int, nargs="+", default=[0], help="crop indices for --grid (default: 0)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    denoiser = pgdm.load_model(args.model)
    x = to_model_range(held_out_crops(denoiser.image_size, args.per_photo, args.seed))
    print(f"{x.shape[0]} crops of {', '.join(PHOTO_HELD_OUT)}; {args.steps} steps, mean of {args.samples} samples, model {args.model}")
    rows, grid = evaluate(denoiser, x, args.steps, args.samples, args.seed, args.grid_crops if args.grid else None)
    if args.grid:
        print(f"wrote {write_grid(grid, GRID_LABELS, args.grid)}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"model": args.model, "crops": x.shape[0], "held_out": list(PHOTO_HELD_OUT), "steps": args.steps, "samples": args.samples}
        (args.out / "results.json").write_text(json.dumps({"settings": meta, "tasks": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
