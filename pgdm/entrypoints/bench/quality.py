"""``pgdm bench quality``: every method × steps × task × σ_y on real images, through the engine.

Per cell: PSNR and SSIM (torchmetrics, [0, 1] scale); the paper's distribution metrics against the clean images
(:func:`distribution_scorer`): on 32×32 grayscale images classifier accuracy (CA, with Fashion-MNIST labels),
FID and KID (± its std over subsets) in the shipped Fashion-MNIST classifier's feature space, on other images
Inception FID/KID from a local weights file; LPIPS from a local AlexNet weights file (:mod:`pgdm.lpips`; never
downloaded); measurement consistency ‖h(x̂) − y‖ (RMS, [-1, 1] scale), NFE (network evaluations per
image; VJP methods also run one backward per step) and seconds per image (after compiling, which is reported
apart). :func:`mark_frontier` marks, per task and σ_y, the cells on each metric's quality-per-second frontier. Measurements are h(x) plus N(0, σ_y²) noise (``pgdm.ops.GaussianNoise``, seed 0); every method
gets the same images, measurements and sampler seeds.
"""
from __future__ import annotations

import os
import time

import torch

from pgdm import metrics
from pgdm.data import load_fashion_mnist, load_fashion_mnist_labels, to_model_range
from pgdm.io import list_images, read_image
from pgdm.operators import GaussianNoise, parse
from .cells import MethodSpec

__all__ = ["load_images", "distribution_scorer", "quality_cell", "mark_frontier", "FRONTIER_METRICS"]

# Metrics whose quality-per-second frontier is marked, and whether higher is better.
FRONTIER_METRICS = {"psnr": True, "ca": True, "fid": False, "kid": False}


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


def distribution_scorer(data: str, images: torch.Tensor, inception_weights: str | None):
    """(scorer, note): a function mapping restorations (n, C, H, W) in [-1, 1] to ``{"ca"?, "fid", "kid", "kid_std"}``
    against ``images``, and the one-line note saying what it measures; scorer None (and the reason) when none can run.

    32×32 grayscale images without ``inception_weights``: the shipped Fashion-MNIST classifier (CA when ``data`` is
    "fashion-mnist", whose labels are known); otherwise Inception FID/KID from the local ``inception_weights`` file.
    """
    from pgdm.classifier import CLASSIFIER_PATH, classifier_info

    if tuple(images.shape[1:]) == (1, 32, 32) and inception_weights is None:
        labels = load_fashion_mnist_labels(split="test")[: images.shape[0]] if data == "fashion-mnist" else None
        accuracy = classifier_info(CLASSIFIER_PATH)["test_accuracy"]
        what = "CA, FID and KID" if labels is not None else "FID and KID (no labels: no CA)"
        return metrics.classifier_scores(images, labels), (
            f"{what} in the feature space (64-d penultimate layer) of the shipped Fashion-MNIST classifier "
            f"(test accuracy {accuracy:.4f}), against the {images.shape[0]} clean images; KID: mean ± std over 100 subsets "
            f"of {min(1000, images.shape[0] // 2)}")  # fmt: skip
    if (reason := metrics.inception_unavailable(inception_weights)) is not None:
        return None, reason
    return metrics.inception_scores(images, inception_weights), (
        f"FID and KID in the 2048-d pool features of torchmetrics' FID Inception network from {inception_weights}, against "
        f"the {images.shape[0]} clean images; KID: mean ± std over 100 subsets of {min(1000, images.shape[0] // 2)}")


def quality_cell(engine_for, spec: MethodSpec, task: str, steps: int, sigma_y: float, images: torch.Tensor, batch_size: int, device: str,
                 scorer=None, lpips=None) -> dict:  # fmt: skip
    """One cell. ``engine_for(spec, steps)`` returns the (cached) engine for that method and step count; ``scorer``
    (from :func:`distribution_scorer`) adds the distribution metrics, ``lpips`` (a :class:`pgdm.lpips.LPIPS`) the
    mean LPIPS to the clean images."""
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
    if scorer is not None:
        row |= scorer(x)
    if lpips is not None:
        row["lpips"] = float(lpips(x, clean).mean())
    return row


def mark_frontier(rows: list[dict]) -> None:
    """Set each row's ``frontier`` to the metrics of :data:`FRONTIER_METRICS` on whose quality-per-second frontier it
    lies, e.g. "fid,kid": within its task and σ_y, no other finished cell is at least as fast and at least as good
    on that metric, and strictly better in one of the two. Those cells are the best method and steps at each budget."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("seconds_per_image") is not None]
    for r in rows:
        r["frontier"] = ""
    for metric, higher in FRONTIER_METRICS.items():
        for r in ok:
            if r.get(metric) is None:
                continue
            q = r[metric] if higher else -r[metric]
            rivals = [(o["seconds_per_image"], o[metric] if higher else -o[metric]) for o in ok
                      if o is not r and o.get(metric) is not None and (o["task"], o["sigma_y"]) == (r["task"], r["sigma_y"])]  # fmt: skip
            if not any(s <= r["seconds_per_image"] and v >= q and (s < r["seconds_per_image"] or v > q) for s, v in rivals):
                r["frontier"] = ",".join(filter(None, [r["frontier"], metric]))


def threads_note() -> str:
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
