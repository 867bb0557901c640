"""Every method against a plain eager loop written from its paper, with dense float64 matrices.

The reference loops below work on flattened images with the dense H, its pseudoinverse (torch.linalg.pinv), a
dense SVD (DDRM), a normal-equation solve (DiffPIR) and DPS's ancestral DDPM form; they share with pgdm only the
denoiser, the plan's starting sample and its noise draws. Prior: the analytic Gaussian mixture (exact ε), 8×8
grayscale, 5 steps, 3 images, clip_denoised=False (the literal algorithms). Tolerance 1e-8 (float64 rounding of
different but equivalent formulas; DDRM's dense SVD rotates degenerate subspaces, which its update ignores).
"""
import pytest
import torch

import pgdm.engine as E
from pgdm import Restorer
from pgdm.analytic import mixture_denoiser
from pgdm.ops import Blur, Inpaint, SuperResolution, center_box_mask
from pgdm.sampler import run_eager, step_inputs
from pgdm.units import sigma_to_model
from test_helpers import dense

SHAPE = (1, 8, 8)
STEPS = 5
TASKS = {
    "inpaint": lambda: Inpaint(center_box_mask(8, 8)),
    "sr2-bicubic": lambda: SuperResolution(2, "bicubic"),
    "blur-gaussian": lambda: Blur.gaussian(3, 0.8),
}
METHODS = ["pigdm", "rg", "dps", "ddnm", "ddnm+", "diffpir", "ddrm"]
OPTIONS = {"pigdm": {"weight": 2.0}, "dps": {"scale": 0.5}, "ddnm": {"eta": 0.7}, "ddrm": {"eta": 0.7, "eta_b": 0.9}}  # non-defaults where they matter (η < 1 keeps DDNM's ε term)


def _reference(method, den, plan, H, opts):
    """The method's update written from its paper, on (B, D) float64 rows."""
    acp, ts = den.alphas_cumprod, plan.coefs["t"]
    Hp = torch.linalg.pinv(H, rtol=1e-3)
    x, y = plan.x_init.flatten(1), plan.y.flatten(1)
    sy = torch.zeros(x.shape[0], dtype=torch.float64) if plan.sigma_y2 is None else plan.sigma_y2.sqrt()
    for i, t in enumerate(ts.tolist()):
        a_t = float(acp[t])
        a_s = float(acp[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        z = step_inputs(plan, i, torch.float64)[1].flatten(1)
        xg = x.clone().requires_grad_()
        eps = den(xg.view(-1, *SHAPE), torch.full((x.shape[0],), t)).flatten(1)
        x0 = (xg - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        eta = opts.get("eta", 1.0)
        c1 = eta * ((1 - a_t / a_s) * (1 - a_s) / (1 - a_t)) ** 0.5
        c2 = max(1 - a_s - c1**2, 0.0) ** 0.5
        if method in ("pigdm", "rg"):  # ΠGDM Alg. 1 / Eq. 14, Listing 1's VJP; fixed weight: Eq. 21 inside DDIM
            if method == "rg":
                v = (y - x0 @ H.T) @ H
            else:
                v = torch.stack([
                    Hp @ (yb - H @ xb) if s == 0 else H.T @ torch.linalg.solve(H @ H.T + s**2 / (1 - a_t) * torch.eye(H.shape[0], dtype=H.dtype), yb - H @ xb)
                    for yb, xb, s in zip(y, x0.detach(), sy.tolist())
                ])  # fmt: skip
            (g,) = torch.autograd.grad((v.detach() * x0).sum(), xg)
            w = a_t**0.5 if opts.get("weight") is None else opts["weight"] * (a_s * a_t) ** 0.5
            x = a_s**0.5 * x0 + c1 * z + c2 * eps + w * g
        elif method == "dps":  # DPS Alg. 1: ancestral DDPM step, then − ζ' ∇‖y − Hx̂‖ per image
            beta = 1 - a_t / a_s
            mean = a_s**0.5 * beta / (1 - a_t) * x0 + (a_t / a_s) ** 0.5 * (1 - a_s) / (1 - a_t) * xg
            (grad,) = torch.autograd.grad((y - x0 @ H.T).norm(dim=1).sum(), xg)
            x = mean + ((1 - a_s) / (1 - a_t) * beta) ** 0.5 * z - opts["scale"] * grad
        elif method in ("ddnm", "ddnm+"):  # DDNM Alg. 1 (range–null-space), DDNM+ Eq. 17–19 (Σ = λI)
            eta = opts.get("eta", 1.0)
            c1, c2 = eta * (1 - a_s) ** 0.5, (1 - a_s) ** 0.5 * (1 - eta**2) ** 0.5
            rows = []
            for xb, yb, eb, zb, s in zip(x0, y, eps, z, sy.tolist()):
                lam, gamma = 1.0, c1
                if method == "ddnm+" and s > 0:
                    lam = 1.0 if c1 >= a_s**0.5 * s else c1 / (a_s**0.5 * s)
                    gamma = max(c1**2 - (a_s**0.5 * lam * s) ** 2, 0.0) ** 0.5
                rows.append(a_s**0.5 * (xb - lam * Hp @ (H @ xb - yb)) + gamma * zb + c2 * eb)
            x = torch.stack(rows)
        elif method == "diffpir":  # DiffPIR Alg. 1: data step by the normal equations, ρ = λ σ_n²/σ̄_t²
            lam, zeta = opts["lam"], opts["zeta"]
            rows = []
            for xb, yb, s in zip(x0, y, sy.tolist()):
                rho = lam * s**2 * a_t / (1 - a_t)
                n = H.shape[1]
                rows.append(xb + Hp @ (yb - H @ xb) if s == 0 else torch.linalg.solve(H.T @ H + rho * torch.eye(n, dtype=H.dtype), H.T @ yb + rho * xb))
            x0h = torch.stack(rows)
            eps_hat = (xg - a_t**0.5 * x0h) / (1 - a_t) ** 0.5
            x = a_s**0.5 * x0h + (1 - a_s) ** 0.5 * ((1 - zeta) ** 0.5 * eps_hat + zeta**0.5 * z)
        elif method == "ddrm":  # DDRM Eq. 7–8 in the dense SVD H = U diag(S) Vh
            eta, eta_b = opts.get("eta", 1.0), opts.get("eta_b", 1.0)
            U, S, Vh = torch.linalg.svd(H, full_matrices=True)
            s = torch.zeros(H.shape[1], dtype=H.dtype)
            s[: S.numel()] = torch.where(S > 1e-3 * S.max(), S, torch.zeros_like(S))
            sig_t, sig_s = ((1 - a_t) / a_t) ** 0.5, ((1 - a_s) / a_s) ** 0.5
            rows = []
            for xb, x0b, yb, zb, syb in zip(xg / a_t**0.5, x0, y, z, sy.tolist()):
                xt_bar, x0_bar, z_bar = Vh @ xb, Vh @ x0b, Vh @ zb
                y_bar = torch.zeros_like(s)
                y_bar[: S.numel()] = U.T @ yb
                out = torch.empty_like(s)
                for j in range(s.numel()):
                    if s[j] == 0:
                        out[j] = x0_bar[j] + (1 - eta**2) ** 0.5 * sig_s * (xt_bar[j] - x0_bar[j]) / sig_t + eta * sig_s * z_bar[j]
                        continue
                    yj, sj = y_bar[j] / s[j], syb / s[j]
                    if sig_s < sj:
                        out[j] = x0_bar[j] + (1 - eta**2) ** 0.5 * sig_s * (yj - x0_bar[j]) / sj + eta * sig_s * z_bar[j]
                    else:
                        out[j] = (1 - eta_b) * x0_bar[j] + eta_b * yj + max(sig_s**2 - eta_b**2 * sj**2, 0.0) ** 0.5 * z_bar[j]
                rows.append(a_s**0.5 * (Vh.T @ out))
            x = torch.stack(rows)
        x = x.detach()
    return x


def _setup(task, sigma_y):
    den = mixture_denoiser(SHAPE)[0]
    op = TASKS[task]().double()
    gen = torch.Generator().manual_seed(3)
    clean = (torch.rand(3, *SHAPE, generator=gen, dtype=torch.float64) * 2 - 1) * 0.8
    y = op(clean)
    y = y + sigma_to_model(sigma_y) * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return den, op, y


@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("method", METHODS)
def test_method_matches_its_paper_loop(method, task, sigma_y):
    den, op, y = _setup(task, sigma_y)
    opts = OPTIONS.get(method, {})
    restorer = Restorer(den, steps=STEPS, clip_denoised=False, method=method, options=opts)
    plan = restorer.plan(y, op, sigma_y=[sigma_y, 0.0, 2 * sigma_y], seed=[4, 5, 6])  # a mixed-noise batch
    got = run_eager(den, plan)
    want = _reference(method, den, plan, dense(op, SHAPE), restorer.settings.method_options(op))
    torch.testing.assert_close(got.flatten(1), want, atol=1e-8, rtol=1e-8)
    # the engine runs the same plan → loop: bitwise equal in eager mode
    eng = E.restorer(den, "eager", steps=STEPS, clip_denoised=False, method=method, method_options=opts)
    assert torch.equal(eng.run_plan(plan), got)


def test_a_broken_method_fails_its_reference(monkeypatch):
    """The comparison can fail: DDNM with the null-space correction's sign flipped."""
    import pgdm.methods.ddnm as ddnm

    den, op, y = _setup("sr2-bicubic", 0.0)
    restorer = Restorer(den, steps=STEPS, clip_denoised=False, method="ddnm")
    plan = restorer.plan(y, op, seed=[4, 5, 6])
    want = _reference("ddnm", den, plan, dense(op, SHAPE), restorer.settings.method_options(op))
    original = ddnm._ddnm

    def flipped(denoiser, x, coef, y_pinv, op, noise, *rest, **kw):
        return original(denoiser, x, coef, 2 * op.project(x) - y_pinv, op, noise, *rest, **kw)

    monkeypatch.setattr(ddnm, "_ddnm", flipped)
    assert (run_eager(den, plan).flatten(1) - want).abs().max() > 1e-3


@pytest.mark.parametrize("task", sorted(TASKS))
def test_ddrm_ddnm_and_diffpir_are_one_sampler_when_noiseless_with_fresh_noise(task):
    """Noiseless, η = 1 (DiffPIR: ζ = 1, its data step at ρ_t → 0): each puts x̂ on the measurement and adds only fresh
    noise, so the three defaults give one sample from one plan (what makes their rows of the paper-metrics table
    equal); DDNM with η = 0.85 does not where H has a null space (the blur here is full rank: h†(y) is all of x̂')."""
    den, op, y = _setup(task, 0.0)
    out = {}
    for method, opts in [("ddrm", {}), ("ddnm", {}), ("diffpir", {"zeta": 1.0}), ("ddnm-0.85", {"eta": 0.85})]:
        restorer = Restorer(den, steps=STEPS, clip_denoised=False, method=method.split("-")[0], options=opts)
        out[method] = run_eager(den, restorer.plan(y, op, seed=[4, 5, 6])).flatten(1)
    assert torch.allclose(out["ddrm"], out["ddnm"], atol=1e-8) and torch.allclose(out["diffpir"], out["ddnm"], atol=1e-8)
    if task != "blur-gaussian":
        assert (out["ddnm-0.85"] - out["ddnm"]).abs().max() > 1e-3
