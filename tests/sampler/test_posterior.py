"""ΠGDM on an analytic Gaussian-mixture prior (exact ε) against the exact posterior.

ΠGDM is an approximate posterior sampler (the Gaussian p(x0|x_t) of Eq. 4 and the adaptive weights of
Sec. 3.3 are heuristics), so the bounds below are what the correct algorithm reaches with 20 steps, 1000
samples and fixed seeds — and each deliberately wrong variant breaks at least one of them:
  * flipped guidance: diverges (errors ≫ 1);
  * halved guidance: leaves a measurement residual in the noiseless cases (correct: exactly 0) and
    misses the posterior in noisy inpainting;
  * dropped r_t (λ = σ_y² instead of σ_y²/r_t²): over-fits the noisy y, collapsing the spread of Hx.
"""
import dataclasses

import pytest
import torch

import pgdm.methods.pigdm as pigdm_method
import pgdm.sampler as sampler
from pgdm.analytic import GaussianMixtureEps, gmm_posterior
from pgdm import Denoiser, schedules
from pgdm.ops import Inpaint, SuperResolution, center_box_mask
from pgdm.units import sigma_to_pixel
from test_helpers import dense

NUM = 1000
STEPS = 20
CASES = {
    "inpaint": ((1, 4, 4), lambda: Inpaint(center_box_mask(4, 4))),
    "sr4": ((1, 8, 8), lambda: SuperResolution(4)),
}
_correct = pigdm_method.guidance_vector
VARIANTS = {
    "flipped": lambda *a: -_correct(*a),
    "halved": lambda *a: 0.5 * _correct(*a),
    "no_r_t": lambda op, y, y_pinv, x0, r2, s2: _correct(op, y, y_pinv, x0, torch.ones_like(r2), s2),
}


def mixture(shape):
    d = int(torch.tensor(shape).prod())
    gen = torch.Generator().manual_seed(1)
    means = 0.5 * torch.randn(3, d, generator=gen, dtype=torch.float64)
    stds = torch.tensor([0.9, 0.8, 0.85], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    acp = schedules.linear(1000)
    return Denoiser(GaussianMixtureEps(means, stds, weights, acp, shape), acp, channels=shape[0]), means, stds, weights


def posterior_errors(case, sigma_y, end_on_y=False):
    """(x-space mean error / posterior scale, W2 distance of per-coordinate Gaussians fitted to Hx, max |Hx − y|)."""
    shape, make_op = CASES[case]
    den, means, stds, weights = mixture(shape)
    op = make_op().double()
    H = dense(op, shape)
    gen = torch.Generator().manual_seed(7)
    x_true = means[0] + stds[0] * torch.randn(means.shape[1], generator=gen, dtype=torch.float64)
    y = op(x_true.view(1, *shape))
    y = y + sigma_y * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    pw, pm, pc = gmm_posterior(means, stds, weights, H, y.flatten(), sigma_y)
    mean = (pw[:, None] * pm).sum(0)
    cov = sum(w * (c + torch.outer(m - mean, m - mean)) for w, m, c in zip(pw, pm, pc))

    plan = sampler.plan_sampling(
        den, y.expand(NUM, *y.shape[1:]), op, sampler.SamplerSettings(steps=STEPS, clip_denoised=False, end_on_measurement=end_on_y),
        sigma_y=sigma_to_pixel(sigma_y), seed=0, dtype=torch.float64,
    )  # fmt: skip
    xs = sampler.end_on_measurement(plan, sampler.run_eager(den, plan)).flatten(1)
    mean_err = (xs.mean(0) - mean).norm() / cov.diagonal().sum().sqrt()
    hx = xs @ H.T
    hx_mean_err = (hx.mean(0) - H @ mean).pow(2).mean()
    hx_std_err = (hx.std(0) - (H @ cov @ H.T).diagonal().clamp_min(0).sqrt()).pow(2).mean()
    return float(mean_err), float((hx_mean_err + hx_std_err).sqrt()), float((hx - y.flatten()).abs().max())


def within_bounds(case, sigma_y):
    mean_err, hx_w2, _ = posterior_errors(case, sigma_y)
    return mean_err < 0.3 and hx_w2 < (0.15 if sigma_y else 1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sigma_y", [0.0, 0.3])
@pytest.mark.parametrize("end_on_y", [False, True], ids=["literal", "end-on-y"])
def test_samples_close_to_exact_posterior(case, sigma_y, end_on_y):
    mean_err, hx_w2, residual = posterior_errors(case, sigma_y, end_on_y)
    assert mean_err < 0.3
    if sigma_y or not end_on_y:  # (ended on y, Hx has no spread at all; the reference's is float rounding, ~1e-6)
        assert hx_w2 < (0.15 if sigma_y else 1e-6), "noiseless samples must satisfy h(x) = y; noisy ones spread like the posterior"
    else:
        assert residual < 1e-9, "ended on the measurement, h(x) = y to float64 rounding"


def test_ending_on_the_measurement_leaves_noisy_rows_and_fixes_the_noiseless_residual():
    """The literal ΠGDM sample with a halved last correction misses y; ending on the measurement puts the noiseless
    rows back on h(x) = y and leaves the noisy rows exactly as sampled."""
    shape, make_op = CASES["sr4"]
    den, means, stds, _ = mixture(shape)
    op = make_op().double()
    y = op(means[:2].view(2, *shape))
    settings = sampler.SamplerSettings(steps=3, clip_denoised=False)
    plan = sampler.plan_sampling(den, y, op, settings, sigma_y=[0.0, 0.3], seed=0, dtype=torch.float64)
    xs = sampler.run_eager(den, plan)
    ended = sampler.end_on_measurement(plan, xs)
    assert float((op(xs[:1]) - y[:1]).abs().max()) > 1e-6  # the literal 3-step sample misses y a little
    assert float((op(ended[:1]) - y[:1]).abs().max()) < 1e-12
    assert torch.equal(ended[1:], xs[1:])
    literal = sampler.plan_sampling(den, y, op, dataclasses.replace(settings, end_on_measurement=False), sigma_y=[0.0, 0.3], dtype=torch.float64)
    assert torch.equal(sampler.end_on_measurement(literal, xs), xs)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wrong_guidance_variants_fail(variant, monkeypatch):
    monkeypatch.setattr(pigdm_method, "guidance_vector", VARIANTS[variant])
    results = {(case, s): within_bounds(case, s) for case in CASES for s in (0.0, 0.3)}
    assert not all(results.values()), f"{variant} guidance passed every posterior check: {results}"
