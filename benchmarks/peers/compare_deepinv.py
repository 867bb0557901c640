"""pgdm's DDRM, DPS and DiffPIR against deepinv's, on one network, one set of images and one set of measurements.

Every sampler runs the default model (``pgdm.load_model()``) on the same held-out Fashion-MNIST test images
(``--n`` evenly spaced over the test split, as ``benchmarks/eval_default.py`` picks them), the same measurements
(SR×4 by average pooling, the centre 16×16 box, the centre box with σ_y = 0.05 on the [0, 1] scale) and the same
number of network evaluations (NFE), one sample per image, seed 0, eager float32. PSNR on [0, 1].

Peers:
  * DDRM: deepinv's ``sampling.DDRM`` given σ_t at pgdm's own timesteps and pgdm's η, η_b, and a port of the
    authors' ``efficient_generalized_steps`` (bahjat-kawar/ddrm, functions/denoising.py: its timestep grid
    ``range(0, 1000, 1000 // NFE)``, its spectral x_T, no clamp). deepinv 0.5 draws every DDRM noise with std
    σ_t/√2 while it hands the denoiser σ_t; the column "deepinv, full noise" reruns it with those draws scaled by
    √2 (``torch.randn_like`` wrapped for the call), which is the paper's update.
  * DPS: deepinv's ``sampling.DPS`` (DDPM solver, ``num_steps`` = NFE, ``weight`` = ζ', images in [-1, 1]).
  * DiffPIR: deepinv's ``sampling.DiffPIR`` (``max_iter`` = NFE, its own quadratic timestep grid, λ and ζ).

Both sides use the same options: pgdm's per-task defaults unless ``--pgdm-options`` overrides them;
``--deepinv-dps-weights`` runs deepinv's DPS at several weights (its ζ' enters its SDE step, not pgdm's update).
deepinv is a peer only, never a dependency of pgdm: install it beside torch with ``pip install --no-deps deepinv
natsort h5py``. It imports torchvision at start-up; a torchvision whose C++ ops do not match the installed torch
(a CUDA wheel beside CPU torch) can be put on ``--peer-site DIR`` (``pip install --no-deps --target DIR
torchvision``): the two torchvision ops its import registers fake kernels for are declared first.

    OMP_NUM_THREADS=1 nice python benchmarks/peers/compare_deepinv.py --nfe 20,100 --peer-site /path/to/site
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

import torch

import pgdm
from pgdm import schedules
from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.metrics import psnr
from pgdm.ops import GaussianNoise, parse

TASKS = [("SR×4 (pool)", "sr4", 0.0), ("centre inpainting", "inpaint-center", 0.0), ("noisy inpainting σ_y=0.05", "inpaint-center", 0.05)]


def import_deepinv(site: str | None):
    if site:
        sys.path.append(site)
    lib = torch.library.Library("torchvision", "DEF")  # torchvision's import registers fakes for these two ops
    for name in ("nms", "qnms"):
        with contextlib.suppress(RuntimeError):  # already declared by a working torchvision
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import deepinv

    return deepinv


class VEDenoiser(torch.nn.Module):
    """deepinv's denoiser interface over pgdm's ε-network, in the variance-exploding form on the [-1, 1] scale:
    D(x, σ) = x − σ̄_t ε_θ(√ᾱ_t x, t), t the timestep whose σ̄_t = √((1 − ᾱ_t)/ᾱ_t) is nearest σ; x̂ clamped to
    [-1, 1] (``clip`` False: not). x: (B, C, H, W)."""

    def __init__(self, den: pgdm.Denoiser, clip: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.den, self.clip, self.dtype = den, clip, dtype
        acp = den.alphas_cumprod.double()
        self.acp, self.sigmas = acp, ((1 - acp) / acp).sqrt()

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        t = int((self.sigmas - sigma).abs().argmin())
        a = float(self.acp[t])
        xt = (math.sqrt(a) * x).to(self.dtype)
        eps = self.den(xt, torch.full((x.shape[0],), t), None)
        x0 = ((xt - math.sqrt(1 - a) * eps) / math.sqrt(a)).to(x.dtype)
        return x0.clamp(-1, 1) if self.clip else x0


class SVDPhysics:
    """deepinv's ``DecomposablePhysics`` interface (``mask``, ``U_adjoint``, ``V``, ``V_adjoint``) over a pgdm
    operator's SVD, completed with H's null space: a spectral vector is (Vᵀx, x − VVᵀx) flattened, (B, K + D);
    the null-space block is kept in pixel coordinates and projected in V, which is exact for DDRM, since DDRM
    treats every null component alike."""

    def __init__(self, op, shape, sigma_model: float, dtype=torch.float32):
        self.op, self.shape = op, tuple(shape)
        probe = torch.zeros(1, *shape, dtype=dtype)
        z = op.V_adjoint(probe)
        self.zshape, self.d = tuple(z.shape[1:]), probe.numel()
        s = op.singular_values(probe).expand_as(z).reshape(1, -1)
        self.mask = torch.cat([s, s.new_zeros(1, self.d)], 1)
        self.noise_model = type("Noise", (), {"sigma": sigma_model})()

    def _split(self, b):
        k = b.shape[1] - self.d
        return b[:, :k].reshape(-1, *self.zshape), b[:, k:].reshape(-1, *self.shape)

    def U_adjoint(self, y):
        u = self.op.U_adjoint(y).flatten(1)
        return torch.cat([u, u.new_zeros(u.shape[0], self.d)], 1)

    def V(self, b):
        z, n = self._split(b)
        return self.op.V(z) + n - self.op.V(self.op.V_adjoint(n))

    def V_adjoint(self, x):
        z = self.op.V_adjoint(x)
        return torch.cat([z.flatten(1), (x - self.op.V(z)).flatten(1)], 1)


@contextlib.contextmanager
def scaled_randn(factor: float):
    """torch.randn_like scaled by ``factor`` inside the block."""
    orig = torch.randn_like
    torch.randn_like = lambda *a, **k: factor * orig(*a, **k)
    try:
        yield
    finally:
        torch.randn_like = orig


def ddrm_authors(den: pgdm.Denoiser, y, phys: SVDPhysics, sigma_0: float, nfe: int, eta: float = 0.85, eta_b: float = 1.0):
    """bahjat-kawar/ddrm ``efficient_generalized_steps`` (functions/denoising.py) on pgdm's network and SVD:
    timesteps ``range(0, T, T // nfe)``, x_T drawn in the spectral space around ȳ, no clamp of x̂; returns the last
    sample (σ = 0). sigma_0: σ_y on the [-1, 1] scale."""
    acp = den.alphas_cumprod.double()
    alpha = lambda t: 1.0 if t < 0 else float(acp[t])  # noqa: E731  (ᾱ_{-1} = 1, as their compute_alpha)
    seq = list(range(0, acp.numel(), acp.numel() // nfe))
    s_all = phys.mask[0]
    observed = s_all > 0
    uty = phys.U_adjoint(y)
    ybar = torch.where(observed, uty / torch.where(observed, s_all, torch.ones_like(s_all)), torch.zeros_like(uty))
    sig_T = math.sqrt((1 - alpha(seq[-1])) / alpha(seq[-1]))
    large = observed & (s_all * sig_T > sigma_0)
    inv = torch.where(large, sigma_0 / torch.where(large, s_all, torch.ones_like(s_all)), torch.zeros_like(s_all))
    noise = torch.randn_like(uty)
    init = torch.where(large, ybar, torch.zeros_like(ybar)) + (sig_T**2 - inv**2).clamp_min(0).sqrt() * noise
    x = phys.V(init / sig_T)  # their init_y / largest_sigmas: the VE draw scaled by 1/σ_T (≈ √ᾱ_T), as a VP x_T
    for i, j in zip(reversed(seq), reversed([-1] + seq[:-1])):
        at, an = alpha(i), alpha(j)
        eps = den(x, torch.full((x.shape[0],), i), None).double()
        x0 = (x.double() - eps * math.sqrt(1 - at)) / math.sqrt(at)
        sn = math.sqrt((1 - an) / an)
        vx0, veps = phys.V_adjoint(x0), phys.V_adjoint(eps)
        n = torch.randn_like(vx0)
        unobs = vx0 + math.sqrt(1 - eta**2) * sn * veps + eta * sn * n
        after = observed & (s_all * sn < sigma_0)
        before = observed & (s_all * sn > sigma_0)
        s_safe = torch.where(observed, s_all, torch.ones_like(s_all))
        low = vx0 + math.sqrt(1 - eta**2) * sn * (uty.double() - s_all * vx0) / max(sigma_0, 1e-30) + eta * sn * n
        high = ybar.double() * eta_b + (1 - eta_b) * vx0 + (sn**2 - sigma_0**2 / s_safe**2 * eta_b**2).clamp_min(0).sqrt() * n
        z = torch.where(before, high, torch.where(after, low, unobs))
        x = (math.sqrt(an) * phys.V(z)).float()
    return x


def posterior_table(dinv, nfes: list[int], n: int) -> None:
    """DDRM on the analytic Gaussian-mixture prior of ``pgdm bench posterior`` (exact ε, 8×8): sliced W2 of n samples
    to n exact posterior draws, for pgdm's DDRM, deepinv's as shipped and deepinv's with full-scale noise."""
    from pgdm.analytic import gmm_posterior, mixture_denoiser, sample_mixture, sliced_w2
    from pgdm.entrypoints.bench.posterior import SHAPE, TASKS, _dense
    from pgdm.units import sigma_to_model

    den, means, stds, weights = mixture_denoiser(SHAPE)
    vden = VEDenoiser(den, clip=False, dtype=torch.float64)
    acp = den.alphas_cumprod.double()
    print("| task | NFE | floor | pgdm DDRM | deepinv DDRM | deepinv DDRM, full noise |\n|---|---|---|---|---|---|", flush=True)
    for task, (make_op, sigma_y) in TASKS.items():
        op = make_op().double()
        gen = torch.Generator().manual_seed(7)
        x_true = means[0] + stds[0] * torch.randn(means.shape[1], generator=gen, dtype=torch.float64)
        y = op(x_true.view(1, *SHAPE))
        y = y + sigma_to_model(sigma_y) * torch.randn(y.shape, generator=gen, dtype=torch.float64)
        yn = y.expand(n, *y.shape[1:]).contiguous()
        H = _dense(op)
        pw, pm, pc = gmm_posterior(means, stds, weights, H, y.flatten(), sigma_to_model(sigma_y))
        exact = sample_mixture(pw, pm, pc, n, torch.Generator().manual_seed(100))
        floor = sliced_w2(sample_mixture(pw, pm, pc, n, torch.Generator().manual_seed(200)), exact)
        for nfe in nfes:
            restorer = pgdm.Restorer(den, steps=nfe, method="ddrm", clip_denoised=False)
            ours = pgdm.sampler.run_eager(den, restorer.plan(yn, op, sigma_y=sigma_y, seed=0)).flatten(1)  # unclamped
            ts = schedules.timesteps(nfe, acp.numel())
            opts = restorer.settings.method_options(op)
            sampler = dinv.sampling.DDRM(vden, sigmas=((1 - acp[ts]) / acp[ts]).sqrt().numpy(), eta=opts["eta"], etab=opts["eta_b"])
            phys = SVDPhysics(op, SHAPE, float(sigma_to_model(sigma_y)), torch.float64)
            torch.manual_seed(0)
            shipped = sampler(yn, phys).flatten(1)
            torch.manual_seed(0)
            with scaled_randn(math.sqrt(2.0)):
                full = sampler(yn, phys).flatten(1)
            w = [sliced_w2(v.double(), exact) for v in (ours, shipped, full)]
            print(f"| {task} | {nfe} | {floor:.3f} | {w[0]:.3f} | {w[1]:.3f} | {w[2]:.3f} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", default="20,100", help="comma-separated NFE (default: %(default)s)")
    p.add_argument("--methods", default="ddrm,dps,diffpir")
    p.add_argument("--tasks", default="0,1,2", help="comma-separated indices into TASKS (default: all three)")
    p.add_argument("--authors", action="store_true", help="DDRM: also the port of the authors' loop and deepinv with full noise")
    p.add_argument("--n", type=int, default=16, help="test images, evenly spaced over the split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peer-site", help="a folder put on sys.path for deepinv's torchvision")
    p.add_argument("--posterior", action="store_true", help="DDRM on the analytic prior (sliced W2) instead of the images")
    p.add_argument("--deepinv-dps-weights", default="", help="comma-separated weights for deepinv's DPS, each a column "
                   "(default: pgdm's ζ' for the task), to find deepinv's best weight")
    p.add_argument("--pgdm-options", default="", help="METHOD:OPT=V[,…];… extra pgdm options, e.g. 'ddrm:eta=1'")
    args = p.parse_args(argv)
    dinv = import_deepinv(args.peer_site)
    torch.set_num_threads(1)
    if args.posterior:
        with torch.no_grad():
            posterior_table(dinv, [int(v) for v in args.nfe.split(",")], 1000)
        return
    den = pgdm.load_model("default").eval().requires_grad_(False)
    test = load_fashion_mnist(split="test", size=den.image_size)
    x = to_model_range(test[torch.linspace(0, test.shape[0] - 1, args.n).round().long()])
    shape = tuple(x.shape[1:])
    vden = VEDenoiser(den)
    acp = den.alphas_cumprod.double()
    extra: dict[str, dict[str, float]] = {}
    for part in filter(None, args.pgdm_options.split(";")):
        m, _, opts = part.partition(":")
        extra[m] = {k: float(v) for k, v in (o.split("=") for o in opts.split(",") if o)}

    def score(r):
        return float(psnr(r.float().clamp(-1, 1), x).mean())  # every output on [-1, 1], as saved images are

    print("| method | task | NFE | pgdm | peers (PSNR dB) | s |\n|---|---|---|---|---|---|", flush=True)
    for nfe in [int(v) for v in args.nfe.split(",")]:
        for label, spec, sy in [TASKS[int(i)] for i in args.tasks.split(",")]:
            op = parse(spec, shape, seed=args.seed)
            y = op(x)
            if sy:
                y = GaussianNoise(sy, seed=args.seed)(y)
            for method in args.methods.split(","):
                start = time.perf_counter()
                restorer = pgdm.Restorer(den, steps=nfe, method=method, options=extra.get(method))
                with torch.no_grad() if method != "dps" else contextlib.nullcontext():
                    ours = score(restorer.restore(y, op, sigma_y=sy, seed=args.seed))
                opts = restorer.settings.method_options(op)
                peers = {}
                torch.manual_seed(args.seed)
                if method == "ddrm":
                    ts = schedules.timesteps(nfe, acp.numel())
                    sig = ((1 - acp[ts]) / acp[ts]).sqrt().numpy()
                    phys = SVDPhysics(op, shape, 2 * sy)
                    sampler = dinv.sampling.DDRM(vden, sigmas=sig, eta=opts["eta"], etab=opts["eta_b"])
                    with torch.no_grad():
                        peers["deepinv"] = score(sampler(y, phys))
                        torch.manual_seed(args.seed)
                        with scaled_randn(math.sqrt(2.0)):
                            peers["deepinv, full noise"] = score(sampler(y, phys))
                        if args.authors:
                            torch.manual_seed(args.seed)
                            peers["authors' code"] = score(ddrm_authors(den, y, phys, 2 * sy, nfe, opts["eta"], opts["eta_b"]))
                elif method == "dps":
                    physics = dinv.physics.LinearPhysics(A=op.forward, A_adjoint=op.adjoint)
                    for weight in [float(v) for v in args.deepinv_dps_weights.split(",") if v] or [opts["scale"]]:
                        sampler = dinv.sampling.DPS(VEDenoiser(den), num_steps=nfe, weight=weight, minus_one_one=False,
                                                    rng=torch.Generator().manual_seed(args.seed))  # fmt: skip
                        peers[f"deepinv ζ'={weight:g}"] = score(sampler(y, physics, x_init=(x.shape[0], *shape)))
                elif method == "diffpir":
                    # deepinv's DiffPIR: images in [0, 1], its denoiser D(x, σ) on that scale, ρ_t = λσ_n²/σ̄_t² with
                    # σ_n on [0, 1] and σ̄_t on [-1, 1], and a data step argmin ‖Hx − y‖² + 2ρ_t‖x − x̂‖² (the prox
                    # of ½‖Hx − y‖² at γ = 1/(2ρ_t)): the ρ_t of pgdm's lam is that of λ = 2·lam there
                    class Unit(torch.nn.Module):
                        def forward(self, v, sigma, *a, **k):
                            return (vden(2 * v - 1, 2 * float(sigma)) + 1) / 2

                    physics = dinv.physics.LinearPhysics(A=lambda v: (op(2 * v - 1) + op(torch.ones_like(v))) / 2,
                                                         A_adjoint=lambda u: op.adjoint(u),
                                                         noise_model=dinv.physics.GaussianNoise(sigma=max(sy, 1e-3)))  # fmt: skip
                    y01 = (y + op(torch.ones_like(x))) / 2
                    sampler = dinv.sampling.DiffPIR(Unit(), dinv.optim.data_fidelity.L2(), sigma=max(sy, 1e-3), max_iter=nfe,
                                                    zeta=opts["zeta"], lambda_=2 * opts["lam"])  # fmt: skip
                    with torch.no_grad():
                        peers[f"deepinv ζ={opts['zeta']:g}"] = score(2 * sampler(y01, physics) - 1)
                secs = time.perf_counter() - start
                peer_txt = ", ".join(f"{k} {v:.2f}" for k, v in peers.items())
                print(f"| {method} | {label} | {nfe} | {ours:.2f} | {peer_txt} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
