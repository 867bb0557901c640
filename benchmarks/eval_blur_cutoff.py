"""Uniform 9×9 deblurring on held-out Fashion-MNIST test images: the blur pseudo-inverse's spectral cutoff.

Compares ``Blur.uniform(9, ...)`` with a fixed rtol = 1e-3 of the largest |K̂| against the default numerical
cutoff (max(H, W)·eps of the dtype): PSNR ([0, 1] scale) of h†(y) of a noiseless y, in
float32 and float64, and of one noiseless ΠGDM sample (float32, default model).

    python benchmarks/eval_blur_cutoff.py --n 8 --steps 100
"""
from __future__ import annotations

import argparse

import torch

import pgdm
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.metrics import psnr
from pgdm.ops import Blur


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="test images (evenly spaced over the test split)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    denoiser = pgdm.load_model("default")
    test = load_fashion_mnist(split="test", size=denoiser.image_size)
    images = to_model_range(test[torch.linspace(0, test.shape[0] - 1, args.n).round().long()])
    restorer = pgdm.Restorer(denoiser, steps=args.steps, eta=1.0)
    print("| pseudo-inverse cutoff | h†(y) PSNR float32 | h†(y) PSNR float64 | ΠGDM PSNR (1 sample, float32) |")
    print("|---|---:|---:|---:|")
    for label, rtol in (("rtol = 1e-3 · max|K̂|", 1e-3), ("numerical (default)", None)):
        op = Blur(torch.full((9, 9), 1 / 81), rtol=rtol, name="uniform9")
        y = op(images)
        pinv32 = float(psnr(op.pinv(y).clamp(-1, 1), images).mean())
        op64, x64 = op.double(), images.double()
        pinv64 = float(psnr(op64.pinv(op64(x64)).clamp(-1, 1), x64).mean())
        op.float()
        restored = restorer.restore(y, op, seed=args.seed)
        sample = float(psnr(restored, images).mean())
        print(f"| {label} | {pinv32:.2f} | {pinv64:.2f} | {sample:.2f} |", flush=True)


if __name__ == "__main__":
    main()
