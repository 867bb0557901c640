"""``pgdm bench posterior``: every method on an analytic Gaussian-mixture prior, against its exact posterior.

The prior (:func:`pgdm.analytic.mixture_denoiser`, 8×8 grayscale, 3 components) has an exact ε, so what is
measured is the sampler alone: n samples for one measurement y of one draw x from the prior, compared by sliced
W2 (:func:`pgdm.analytic.sliced_w2`) with n exact posterior draws. ``floor`` is the sliced W2 between two sets of
n exact draws (what a perfect sampler scores at this n). clip_denoised=False: the literal algorithms.
"""
from __future__ import annotations

import torch

from pgdm.analytic import gmm_posterior, mixture_denoiser, sample_mixture, sliced_w2
from pgdm.operators import Inpaint, Operator, SuperResolution, center_box_mask
from pgdm.sampler import Restorer, run_eager
from pgdm.units import sigma_to_model
from .cells import MethodSpec

__all__ = ["SHAPE", "TASKS", "posterior_cell"]

SHAPE = (1, 8, 8)
# task → (operator factory, σ_y on the [0, 1] pixel scale)
TASKS: dict[str, tuple] = {
    "inpaint": (lambda: Inpaint(center_box_mask(8, 8)), 0.0),
    "sr4": (lambda: SuperResolution(4), 0.0),
    "inpaint-noisy": (lambda: Inpaint(center_box_mask(8, 8)), 0.15),
}


def _dense(op: Operator) -> torch.Tensor:
    d = int(torch.tensor(SHAPE).prod())
    basis = torch.eye(d, dtype=torch.float64).view(d, *SHAPE)
    return op(basis).flatten(1).T  # (M, D)


def posterior_cell(spec: MethodSpec, task: str, steps: int, n: int = 1000, seed: int = 0) -> dict:
    """One cell: ``spec`` with ``steps`` steps on ``task``; returns the cell's row (sliced W2, floor, residual)."""
    make_op, sigma_y = TASKS[task]
    op = make_op().double()
    den, means, stds, weights = mixture_denoiser(SHAPE)
    gen = torch.Generator().manual_seed(7 + seed)
    x_true = means[0] + stds[0] * torch.randn(means.shape[1], generator=gen, dtype=torch.float64)
    y = op(x_true.view(1, *SHAPE))
    y = y + sigma_to_model(sigma_y) * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    row = {"method": spec.label, "task": task, "steps": steps, "sigma_y": sigma_y, "n": n}
    try:
        restorer = Restorer(den, steps=steps, start_step=spec.start_step, clip_denoised=False, method=spec.name, options=dict(spec.options))
        plan = restorer.plan(y.expand(n, *y.shape[1:]), op, sigma_y=sigma_y, seed=seed * n)
    except ValueError as e:
        return row | {"status": "unsupported", "reason": str(e)}
    xs = run_eager(den, plan).flatten(1)
    H = _dense(op)
    pw, pm, pc = gmm_posterior(means, stds, weights, H, y.flatten(), sigma_to_model(sigma_y))
    exact = sample_mixture(pw, pm, pc, n, torch.Generator().manual_seed(100 + seed))
    other = sample_mixture(pw, pm, pc, n, torch.Generator().manual_seed(200 + seed))
    finite = bool(torch.isfinite(xs).all())
    return row | {
        "status": "ok",
        "sliced_w2": sliced_w2(xs, exact) if finite else float("inf"),
        "floor": sliced_w2(other, exact),
        "residual": float((xs @ H.T - y.flatten()).pow(2).mean().sqrt()) if finite else float("inf"),
    }
