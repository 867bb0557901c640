"""Restoration quality of a model on held-out Fashion-MNIST test images: ΠGDM vs the pseudo-inverse.

For each task: PSNR/SSIM (torchmetrics, [0, 1] scale) of h†(y) (the decoded JPEG, the nearest/SVD
upsampling, the masked image, …), of one ΠGDM posterior sample, and of the mean of K samples
(``num_samples=K``, the MMSE estimate). Also writes a grid of unconditional samples: ΠGDM with an
all-hidden inpainting mask has zero guidance, so it is plain DDIM(η) sampling from the prior.

    python benchmarks/eval_default.py --model default --n 16 --steps 100 --samples 8
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import pgdm
import pgdm.engine
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.io import write_image
from pgdm.metrics import psnr, ssim
from pgdm.ops import GaussianNoise, Inpaint, parse

# (label, spec, sigma_y on the [0, 1] pixel scale, as the paper states it)
TASKS = [
    ("SR×4 (pool)", "sr4-pool", 0.0),
    ("SR×4 (bicubic)", "sr4-bicubic", 0.0),
    ("centre inpainting (16×16 box)", "inpaint-center", 0.0),
    ("JPEG QF10", "jpeg10", 0.0),
    ("uniform 9×9 deblurring", "blur-uniform9", 0.0),
    ("noisy inpainting (centre box, σ_y = 0.05)", "inpaint-center", 0.05),
]


def unconditional_grid(denoiser: pgdm.Denoiser, n: int, steps: int, seed: int) -> torch.Tensor:
    """(C, H·rows, W·cols) grid of n prior samples (ΠGDM with nothing observed)."""
    c, s = denoiser.channels, denoiser.image_size
    op = Inpaint(torch.zeros(1, 1, s, s))
    x = pgdm.Restorer(denoiser, steps=steps).restore(torch.zeros(n, c, s, s), op, seed=seed)
    cols = int(n**0.5)
    rows = x.view(n // cols, cols, c, s, s)  # (rows, cols, C, H, W)
    return rows.permute(2, 0, 3, 1, 4).reshape(c, (n // cols) * s, cols * s)


def evaluate(denoiser: pgdm.Denoiser, images: torch.Tensor, steps: int, samples: int, seed: int, engine: dict | None = None) -> list[dict]:
    """One row per task; ``engine``: EngineConfig settings to restore with ``pgdm.engine`` instead of ``Restorer``."""
    literal = dict(eta=1.0, end_on_measurement=False)  # the samples as the algorithm returns them
    restorer = pgdm.engine.restorer(denoiser, steps=steps, **literal, **engine) if engine else pgdm.Restorer(denoiser, steps=steps, **literal)
    shape = tuple(images.shape[1:])
    rows = []
    for label, spec, sigma_y in TASKS:
        op = parse(spec, shape, seed=seed)
        y = op(images)
        if sigma_y:
            y = GaussianNoise(sigma_y, seed=seed)(y)
        start = time.perf_counter()
        single = restorer.restore(y, op, sigma_y=sigma_y, seed=seed)
        mean = restorer.restore(y, op, sigma_y=sigma_y, seed=seed, num_samples=samples)
        seconds = time.perf_counter() - start
        baseline = op.pinv(y).clamp(-1, 1)
        row = {"task": label, "spec": spec, "sigma_y": sigma_y, "seconds": round(seconds, 1)}
        for name, x in (("pinv", baseline), ("sample", single), (f"mean{samples}", mean)):
            row[f"{name}_psnr"] = float(psnr(x, images).mean())
            row[f"{name}_ssim"] = float(ssim(x, images).mean())
        rows.append(row)
        print(f"{label:44s} h† {row['pinv_psnr']:6.2f} dB  sample {row['sample_psnr']:6.2f} dB  "
              f"mean{samples} {row[f'mean{samples}_psnr']:6.2f} dB  ({seconds:.0f} s)", flush=True)  # fmt: skip
    return rows


def markdown(rows: list[dict], samples: int) -> str:
    lines = [
        f"| task | h†(y) PSNR / SSIM | ΠGDM 1 sample | ΠGDM mean of {samples} | gain of the mean over h†(y) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        m = f"mean{samples}"
        lines.append(
            f"| {r['task']} | {r['pinv_psnr']:.2f} / {r['pinv_ssim']:.3f} | {r['sample_psnr']:.2f} / {r['sample_ssim']:.3f} "
            f"| {r[f'{m}_psnr']:.2f} / {r[f'{m}_ssim']:.3f} | {r[f'{m}_psnr'] - r['pinv_psnr']:+.2f} dB |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--n", type=int, default=16, help="test images (evenly spaced over the test split)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--grid-samples", type=int, default=64, help="unconditional samples in the grid (0: none)")
    p.add_argument("--backend", choices=pgdm.engine.BACKENDS, help="restore with pgdm.engine on this backend (default: pgdm.Restorer)")
    p.add_argument("--precision", default="fp32", choices=sorted(pgdm.engine.PRECISIONS), help="engine network precision")
    p.add_argument("--channels-last", action="store_true", help="engine: NHWC network")
    args = p.parse_args()
    engine = dict(backend=args.backend, precision=args.precision, channels_last=args.channels_last) if args.backend else None
    denoiser = pgdm.load_model(args.model)
    test = load_fashion_mnist(split="test", size=denoiser.image_size)
    idx = torch.linspace(0, test.shape[0] - 1, args.n).round().long()
    images = to_model_range(test[idx])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.grid_samples:
        write_image(unconditional_grid(denoiser, args.grid_samples, args.steps, args.seed), args.out / "samples.png")
    rows = evaluate(denoiser, images, args.steps, args.samples, args.seed, engine)
    table = markdown(rows, args.samples)
    meta = {"model": args.model, "n": args.n, "steps": args.steps, "samples": args.samples, "seed": args.seed, "engine": engine}
    (args.out / "eval.json").write_text(json.dumps({"settings": meta, "results": rows}, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
