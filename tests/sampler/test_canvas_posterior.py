"""The stationary Gaussian prior of pgdm.analytic (exact ε and posterior on any canvas) against dense linear algebra,
and the tiled canvas denoiser measured against it: its ε error falls with overlap, and tiled ΠGDM samples the exact
posterior of a canvas of 4× the tile's area about as well as ΠGDM with the exact whole-canvas ε."""
import pytest
import torch

import pgdm
from pgdm.analytic import StationaryGaussianEps, sliced_w2, stationary_denoiser, stationary_posterior_samples
from pgdm.canvas import CanvasDenoiser
from pgdm.ops import Inpaint, SuperResolution, random_pixel_mask
from pgdm.sampler import SamplerSettings, plan_sampling, run_eager
from test_helpers import dense

PRIOR = dict(alpha=2.0, cutoff=0.1, std=0.5)


def prior_and_sigma(shape):
    prior = StationaryGaussianEps(pgdm.schedules.linear(1000), **PRIOR)
    return prior, dense(prior.covariance, shape)


def test_eps_is_the_exact_score_of_the_circulant_prior():
    prior, sigma = prior_and_sigma((1, 6, 10))
    assert torch.allclose(sigma, sigma.T, atol=1e-12) and bool(torch.linalg.eigvalsh(sigma).min() > 0)
    x = torch.randn(3, 1, 6, 10, dtype=torch.float64)
    for t in (10, 500, 990):
        a = prior.acp[t]
        ref = (1 - a).sqrt() * torch.linalg.solve(a * sigma + (1 - a) * torch.eye(60, dtype=torch.float64), x.flatten(1).T).T
        assert torch.allclose(prior(x, torch.full((3,), t)).flatten(1), ref, atol=1e-10)
    # a large canvas has the per-pixel variance the spectrum is normalised to
    assert abs(float(prior.spectrum(256, 256).mean()) - PRIOR["std"] ** 2) < 0.01


def test_prior_draws_have_the_prior_covariance():
    prior, sigma = prior_and_sigma((1, 4, 6))
    xs = prior.sample(40000, (1, 4, 6), torch.Generator().manual_seed(0)).flatten(1)
    assert float((xs.T @ xs / len(xs) - sigma).abs().max()) < 0.03 * float(sigma.diagonal().max())


@pytest.mark.parametrize("case", ["sr2-noisy", "inpaint"])
def test_posterior_draws_match_the_dense_gaussian_posterior(case):
    shape = (1, 6, 6)
    prior, sigma = prior_and_sigma(shape)
    op, s = (SuperResolution(2).double(), 0.2) if case == "sr2-noisy" else (Inpaint(random_pixel_mask(6, 6, 0.5, seed=1).double()), 0.0)
    H = dense(op, shape)
    y = op(prior.sample(1, shape, torch.Generator().manual_seed(3)))
    S = H @ sigma @ H.T + s**2 * torch.eye(H.shape[0], dtype=torch.float64)
    K = sigma @ H.T @ torch.linalg.pinv(S, hermitian=True)
    mean, cov = K @ y.flatten(), sigma - K @ H @ sigma
    xs = stationary_posterior_samples(prior, op, y, s, 20000, torch.Generator().manual_seed(4)).flatten(1)
    scale = float(cov.diagonal().max())
    assert float((xs.mean(0) - mean).abs().max()) < 0.05 * scale**0.5
    assert float((torch.cov(xs.T) - cov).abs().max()) < 0.05 * scale
    if s == 0:
        assert float((xs @ H.T - y.flatten()).abs().max()) < 1e-8  # noiseless: every draw explains y


def test_tiled_eps_error_falls_with_overlap():
    exact, fixed = stationary_denoiser(1, None, **PRIOR), stationary_denoiser(1, 8, **PRIOR)
    gen = torch.Generator().manual_seed(0)
    x0 = exact.net.sample(16, (1, 16, 24), gen)
    for t in (100, 300, 600):
        a = exact.alphas_cumprod[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        tt = torch.full((16,), t)
        e = exact(xt, tt)
        errors = [float((CanvasDenoiser(fixed, "tiles", overlap=o, shift=False, edges="circular")(xt, tt) - e).norm() / e.norm()) for o in range(5)]
        assert all(b < a for a, b in zip(errors, errors[1:])), (t, errors)
        assert errors[-1] < 0.6 * errors[0]


@pytest.mark.slow
def test_tiled_sampler_reaches_the_exact_posterior_as_the_exact_whole_canvas_sampler():
    """SR×4 of a 16×16 canvas, tiles of 8 (4× the tile's area), 400 samples, 20 steps: sliced W2 to 400 exact
    draws within 1.2× that of ΠGDM with the exact ε on the whole canvas; without overlap, clearly worse."""
    exact, fixed = stationary_denoiser(1, None, **PRIOR), stationary_denoiser(1, 8, **PRIOR)
    op = SuperResolution(4).double()
    y = op(exact.net.sample(1, (1, 16, 16), torch.Generator().manual_seed(7)))
    n = 400
    ref = stationary_posterior_samples(exact.net, op, y, 0.0, n, torch.Generator().manual_seed(100)).flatten(1)
    settings = SamplerSettings("pigdm", steps=20, clip_denoised=False)

    def w2(den):
        plan = plan_sampling(den, y.expand(n, *y.shape[1:]), op, settings, seed=0, dtype=torch.float64)
        with torch.no_grad():
            return sliced_w2(run_eager(den, plan).flatten(1), ref)

    whole = w2(exact)
    tiled = w2(CanvasDenoiser(fixed, "tiles", overlap=2, edges="circular"))
    bare = w2(CanvasDenoiser(fixed, "tiles", overlap=0, shift=False, edges="circular"))
    assert tiled < 1.2 * whole, (tiled, whole)
    assert bare > tiled
