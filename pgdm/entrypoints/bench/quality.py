"""``pgdm bench quality``: every method × steps × task × σ_y on real images, through the engine.

Per cell: PSNR and SSIM (torchmetrics, [0, 1] scale), LPIPS when torchvision and its AlexNet weights are present
locally (never downloaded), measurement consistency ‖h(x̂) − y‖ (RMS, [-1, 1] scale), NFE (network evaluations
per image; VJP methods also run one backward per step) and seconds per image (after compiling, which is
reported apart). Measurements are h(x) plus N(0, σ_y²) noise (``pgdm.ops.GaussianNoise``, seed 0); every method
gets the same images, measurements and sampler seeds.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from pgdm import metrics
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.io import list_images, read_image
from pgdm.operators import GaussianNoise, parse
from .cells import MethodSpec

__all__ = ["load_images", "lpips_available", "quality_cell"]


def load_images(data: str, n: int, channels: int, size: int | None) -> torch.Tensor:
    """The first n images of ``data`` as (n, C, H, W) in [-1, 1]: ``"fashion-mnist"`` (its test split, 32×32) or a folder."""
    if data == "fashion-mnist":
        images = to_model_range(load_fashion_mnist(split="test", size=size or 32)[:n])
    else:
        paths = list_images([data])[:n]
        if not paths:
            raise ValueError(f"no images found in {data}")
        images = torch.cat([read_image(p, channels) for p in paths])
    if images.shape[0] < n:
        raise ValueError(f"--n {n} asks for more images than {data} has ({images.shape[0]})")
    return images


def lpips_available() -> str | None:
    """None when LPIPS can run offline, else the reason it is left out."""
    if importlib.util.find_spec("torchvision") is None:
        return "LPIPS left out: it needs torchvision and its AlexNet weights, which are not installed here (never downloaded at run time)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not weights.exists():
        return f"LPIPS left out: AlexNet weights not found at {weights} (never downloaded at run time)"
    return None


def _lpips(x: torch.Tensor, ref: torch.Tensor) -> float:
    from torchmetrics.functional.image import learned_perceptual_image_patch_similarity as lpips

    rgb = lambda t: t.float().cpu().clamp(-1, 1).expand(-1, 3, -1, -1)  # noqa: E731
    return float(lpips(rgb(x), rgb(ref), net_type="alex", normalize=False))


def quality_cell(engine_for, spec: MethodSpec, task: str, steps: int, sigma_y: float, images: torch.Tensor, batch_size: int, device: str) -> dict:
    """One cell. ``engine_for(spec, steps)`` returns the (cached) engine for that method and step count."""
    row = {"method": spec.label, "task": task, "steps": steps, "sigma_y": sigma_y, "n": images.shape[0]}
    op = parse(task, tuple(images.shape[1:])).to(device)
    try:
        if sigma_y > 0 and not op.linear:
            raise ValueError(f"sigma_y > 0 needs a linear operator, {op.spec} is not")
        engine = engine_for(spec, steps)
        engine.settings.spec.check_operator(op)
    except ValueError as e:
        return row | {"status": "unsupported", "reason": str(e)}
    clean = images.to(device)
    y = op(clean)
    if sigma_y > 0:
        y = GaussianNoise(sigma_y, seed=0)(y)
    outs, seconds, compile_seconds = [], 0.0, 0.0
    for start in range(0, clean.shape[0], batch_size):
        yb = y[start : start + batch_size]
        if not outs:  # the first batch pays for compiling: run it once untimed when the engine compiles
            compile_seconds = engine.warmup(op, tuple(clean.shape[1:]), [yb.shape[0]], sigma_y=sigma_y)
        t0 = time.perf_counter()
        outs.append(engine.restore(yb, op, sigma_y=sigma_y, seed=start))
        seconds += time.perf_counter() - t0
    x = torch.cat(outs)
    finite = bool(torch.isfinite(x).all())
    row |= {
        "status": "ok",
        "psnr": float(metrics.psnr(x, clean).mean()),
        "ssim": float(metrics.ssim(x, clean).mean()),
        "consistency": float((op(x) - y).pow(2).mean().sqrt()),
        "nfe": steps,
        "vjp": engine.settings.spec.vjp,
        "seconds_per_image": seconds / clean.shape[0],
        "compile_seconds": compile_seconds,
        "finite": finite,
    }
    if lpips_available() is None:
        row["lpips"] = _lpips(x, clean)
    return row


def threads_note() -> str:
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
