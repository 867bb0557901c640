"""Restorer API: seeds, batch invariance, posterior-sample averaging, partial starts and bad input."""
import pytest
import torch

import pgdm
from pgdm.analytic import GaussianMixtureEps
from pgdm import Denoiser, Restorer, schedules
from pgdm.ops import Inpaint, Operator, SuperResolution, center_box_mask
from pgdm import rng
from pgdm.rng import gaussian_no_sync, stream_keys


def small_denoiser(image_size=8, class_cond=False):
    acp = schedules.cosine(1000)
    d = image_size * image_size
    gen = torch.Generator().manual_seed(0)
    net = GaussianMixtureEps(0.5 * torch.randn(2, d, generator=gen), torch.tensor([0.6, 0.9]), torch.tensor([0.5, 0.5]), acp, (1, image_size, image_size))
    if class_cond:
        inner = net
        net = lambda x, t, labels: inner(x, t) + 0.01 * labels.float().view(-1, 1, 1, 1)  # noqa: E731
        net = _Wrap(net)
    return Denoiser(net, acp, class_cond=class_cond, image_size=image_size, channels=1)


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class Floor(Operator):
    """A non-linear test operator: h(x) = floor to 4 levels."""

    def forward(self, x):
        return torch.floor((x + 1) * 2).clamp(0, 3)

    def pinv(self, y):
        return (y + 0.5) / 2 - 1


def test_same_seed_same_output_regardless_of_batch():
    den = small_denoiser()
    op = SuperResolution(2)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    restorer = Restorer(den, steps=6)
    batch = restorer.restore(op(x), op, seed=[11 * i for i in range(8)])
    for i in (0, 5):
        single = restorer.restore(op(x[i : i + 1]), op, seed=[11 * i])
        torch.testing.assert_close(single[0], batch[i], atol=1e-6, rtol=0)
    int_seed = restorer.restore(op(x[:3]), op, seed=100)
    torch.testing.assert_close(int_seed[2:3], restorer.restore(op(x[2:3]), op, seed=102), atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1])


def test_rng_is_a_function_of_key_and_counter():
    keys = stream_keys([3, 4, 5])
    a = gaussian_no_sync(keys, 7, (2, 4, 4))
    torch.testing.assert_close(a[1:2], gaussian_no_sync(stream_keys([4]), 7, (2, 4, 4)))
    assert not torch.equal(a, gaussian_no_sync(keys, 8, (2, 4, 4)))
    assert not torch.equal(stream_keys([3], 0), stream_keys([3], 1))
    big = gaussian_no_sync(stream_keys(range(4)), 0, (64, 64, 4))
    assert abs(float(big.mean())) < 0.01 and abs(float(big.std()) - 1) < 0.01


def test_noise_drawn_in_chunks_equals_the_draw_in_one_piece(monkeypatch):
    """The draw's chunking bounds memory only: every element keeps its counters, so a draw cut at odd places (chunks
    of 7 elements, the last one short) is bitwise the draw of the whole image at once, for every row."""
    keys = stream_keys([0, 5, 2**40 + 3])
    whole = {dtype: gaussian_no_sync(keys, 11, (3, 5, 9), dtype) for dtype in (torch.float32, torch.float64)}
    assert 3 * 5 * 9 <= rng._CHUNK  # one piece by default
    monkeypatch.setattr(rng, "_CHUNK", 7)
    for dtype, want in whole.items():
        assert torch.equal(gaussian_no_sync(keys, torch.tensor(11), (3, 5, 9), dtype), want)


def test_num_samples_mean_and_std():
    den = small_denoiser()
    op = Inpaint(center_box_mask(8, 8))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    restorer = Restorer(den, steps=5)
    mean, std = restorer.restore(op(x), op, seed=3, num_samples=4, return_std=True)
    assert mean.shape == std.shape == (2, 1, 8, 8)
    # sample 0 of the K draws is the single-sample restore with the same seed
    single = restorer.restore(op(x), op, seed=3)
    assert not torch.allclose(single, mean)
    observed = op.mask.bool().expand_as(std)
    assert float(std[observed].max()) < 1e-4, "observed pixels are pinned by noiseless guidance"
    assert float(std[~observed].mean()) > 0.05, "hidden pixels vary across posterior samples"
    # the mean of K samples equals averaging K separate runs
    plan_mean = torch.stack([_sample(restorer, op, x, j) for j in range(4)]).clamp(-1, 1).mean(0)
    torch.testing.assert_close(mean, plan_mean, atol=1e-6, rtol=0)


def _sample(restorer, op, x, j):
    from pgdm.sampler import end_on_measurement, plan_sampling, run_eager

    plan = plan_sampling(restorer.denoiser, op(x), op, restorer.settings, seed=3, num_samples=4)
    return end_on_measurement(plan, run_eager(restorer.denoiser, plan)).unflatten(0, (4, -1))[j]


def test_start_step_and_noisy_restore_run_and_stay_in_range():
    den = small_denoiser()
    op = SuperResolution(2, "bicubic")
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    y = op(x) + 0.1 * torch.randn(3, 1, 4, 4)
    out = Restorer(den, steps=5, start_step=400).restore(y, op, sigma_y=[0.1, 0.1, 0.2], seed=0)
    assert out.shape == x.shape and out.abs().max() <= 1
    steps_seen = []
    Restorer(den, steps=5, start_step=400).restore(y, op, sigma_y=0.1, callback=lambda d: steps_seen.append(int(d["t"])))
    assert steps_seen == [400, 300, 200, 100, 0]


def test_class_conditional_labels():
    den = small_denoiser(class_cond=True)
    op = SuperResolution(2)
    y = op(torch.zeros(2, 1, 8, 8))
    a = Restorer(den, steps=3).restore(y, op, class_labels=[1, 900])
    b = Restorer(den, steps=3).restore(y, op, class_labels=5)
    assert a.shape == b.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="class-conditional"):
        Restorer(den, steps=3).restore(y, op)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma_y": -0.1}, "sigma_y must be"),
        ({"seed": [1, 2, 3]}, "one int per image"),
        ({"class_labels": 3}, "unconditional"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_restore_arguments(kwargs, message):
    den = small_denoiser()
    op = SuperResolution(2)
    with pytest.raises(ValueError, match=message) as info:
        Restorer(den, steps=2).restore(op(torch.zeros(2, 1, 8, 8)), op, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_setup_errors():
    den = small_denoiser()
    with pytest.raises(ValueError, match="steps must be in"):
        Restorer(den, steps=0)
    with pytest.raises(ValueError, match="start step"):
        Restorer(den, steps=10, start_step=1000)
    with pytest.raises(ValueError, match="eta"):
        Restorer(den, eta=1.5)
    op = SuperResolution(4)
    with pytest.raises(ValueError, match=r"sr4-pool: the measurement has shape \(1, 1, 4, 4\), but the model's 8×8 images give measurements of shape \(1, 1, 2, 2\)"):
        Restorer(den, steps=2, strategy=None).restore(op(torch.zeros(1, 1, 16, 16)), op)
    with pytest.raises(ValueError, match="non-linear"):
        Restorer(den, steps=2).restore(Floor()(torch.zeros(1, 1, 8, 8)), Floor(), sigma_y=0.1)


def test_nonlinear_operator_restores_consistently():
    den = small_denoiser()
    op = Floor()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    out = Restorer(den, steps=20).restore(op(x), op, seed=1)
    assert float((op(out) == op(x)).float().mean()) > 0.9


def test_schedules():
    lin, cos = schedules.linear(1000), schedules.cosine(1000)
    assert lin.dtype == cos.dtype == torch.float64 and lin.shape == cos.shape == (1000,)
    torch.testing.assert_close(lin[0], torch.tensor(1 - 1e-4, dtype=torch.float64))
    assert (lin.diff() < 0).all() and (cos.diff() < 0).all()
    assert float(lin[-1]) < 1e-4 and float(cos[-1]) < 1e-4
    ts = schedules.timesteps(100, 1000)
    assert ts[0] == 999 and ts[-1] == 0 and (ts.diff() < 0).all()
    assert schedules.timesteps(5, 1000, start=500).tolist() == [500, 375, 250, 125, 0]
    assert pgdm.schedules.from_name("cosine").equal(cos)


def test_clip_denoised_keeps_an_imperfect_network_stable():
    """A network whose ε is half what it should be diverges under the literal Alg. 1 with a linear h; clamping x̂ keeps it bounded."""
    den = small_denoiser()
    inner = den.net
    den.net = _Wrap(lambda x, t: 0.5 * inner(x, t))
    op = SuperResolution(2)
    y = op(torch.rand(2, 1, 8, 8) * 2 - 1)
    seen = []
    record = lambda d: seen.append(float(d["x"].abs().max()))  # noqa: E731
    Restorer(den, steps=20, clip_denoised=False).restore(y, op, callback=record)
    assert not max(seen) < 1e3
    seen.clear()
    out = Restorer(den, steps=20).restore(y, op, callback=record)
    assert max(seen) < 10 and torch.isfinite(out).all()


def test_mixed_noise_levels_with_a_chain_keep_batch_invariance():
    """A σ_y = 0 image batched with a noisy one gets the noiseless guidance, exactly as when restored alone."""
    from pgdm.ops import Blur, Compose

    den = small_denoiser()
    op = Compose([Blur.gaussian(3, 0.8), SuperResolution(2, "bicubic")])
    y = op(torch.rand(2, 1, 8, 8) * 2 - 1)
    restorer = Restorer(den, steps=5)
    mixed = restorer.restore(y, op, sigma_y=[0.0, 0.1], seed=[7, 8])
    alone = restorer.restore(y[:1], op, sigma_y=0.0, seed=[7])
    torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=0)


def test_restore_inside_inference_mode_and_with_grad_mode_on_matches_the_default():
    den = small_denoiser()
    op = SuperResolution(2)
    y = op(torch.rand(2, 1, 8, 8) * 2 - 1)
    restorer = Restorer(den, steps=4)
    want = restorer.restore(y, op, seed=0)
    with torch.inference_mode():  # production pipelines often wrap inference in it
        torch.testing.assert_close(restorer.restore(y, op, seed=0), want, atol=1e-6, rtol=0)
    with torch.enable_grad():
        torch.testing.assert_close(restorer.restore(y, op, seed=0), want, atol=1e-6, rtol=0)


def test_restore_ends_noiseless_linear_rows_on_the_measurement_by_default():
    """ΠGDM's literal last step leaves a measurement residual; ``Restorer`` and the engine end on h(x) = y unless
    told ``end_on_measurement=False``; noisy rows and non-linear operators are left as sampled."""
    from pgdm.engine import Engine, EngineConfig
    from pgdm.ops import Blur

    den = small_denoiser()
    op = Blur.uniform(3)
    x = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8).to(torch.float64)
    y = op(x)
    residual = lambda out: float((op(out) - y[: len(out)]).abs().max())  # noqa: E731
    ended = Restorer(den, steps=4).restore(y, op, seed=0)
    literal = Restorer(den, steps=4, end_on_measurement=False).restore(y, op, seed=0)
    assert residual(literal) > 1e-6 and residual(ended) < 1e-9, (residual(literal), residual(ended))
    assert torch.equal(Engine(den, EngineConfig(steps=4)).restore(y, op, seed=0), ended)
    noisy = Restorer(den, steps=4).restore(y, op, sigma_y=[0.0, 0.1], seed=0)
    noisy_literal = Restorer(den, steps=4, end_on_measurement=False).restore(y, op, sigma_y=[0.0, 0.1], seed=0)
    assert torch.equal(noisy[1], noisy_literal[1]) and residual(noisy[:1]) < 1e-9
    floor = Floor()
    y_floor = floor(x)
    assert torch.equal(Restorer(den, steps=4).restore(y_floor, floor), Restorer(den, steps=4, end_on_measurement=False).restore(y_floor, floor))
    with pytest.raises(ValueError, match="end_on_measurement"):
        Restorer(den, steps=4, end_on_measurement="auto")
