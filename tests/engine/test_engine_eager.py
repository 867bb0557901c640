"""Engine on CPU without compiling: equality with Restorer, frozen weights, flat memory, precision, config.

Tolerances (the tiny random-weight ADM UNet, 16×16, 4 steps from t = 999):
  eager fp32: bitwise equal to ``pgdm.Restorer`` (the same ops in the same order).
  one step in bf16 / fp16 / fp32 channels_last: relative error of x_next against a float64 step
  (see ``STEP_RTOL``); whole restores in low precision are not compared pointwise, because random
  weights amplify any rounding at t ≈ 999 (x̂ divides by √ᾱ ≈ 0.006) into a few saturated pixels.
"""
import gc
import platform
import warnings

import pytest
import torch

import pgdm.engine as E
from engine_helpers import float64_copy, rss_bytes, tiny_denoiser
from pgdm import Restorer
from pgdm.ops import Blur, Inpaint, SuperResolution, random_pixel_mask
from pgdm.rng import gaussian_no_sync, stream_keys
from pgdm.methods import pigdm_step

STEPS = 4
# ‖x_next − x_next(float64)‖ / ‖x_next(float64)‖ for one mid-schedule step.
STEP_RTOL = {("fp32", True): 1e-5, ("bf16", False): 2e-2, ("fp16", False): 3e-3}


def _cases(images):
    masks = random_pixel_mask(16, 16, 0.5, seed=3, batch=3)
    return {
        "sr2": dict(op=SuperResolution(2), kw=dict(seed=5)),
        "inpaint-per-image-noisy": dict(op=Inpaint(masks), kw=dict(sigma_y=[0.1, 0.2, 0.05], seed=[1, 2, 3])),
        "blur-noisy-partial-start": dict(op=Blur.uniform(3), kw=dict(sigma_y=0.05, seed=9), restorer=dict(start_step=400)),
        "sr2-num-samples-std": dict(op=SuperResolution(2, "bicubic"), kw=dict(seed=0, num_samples=3, return_std=True)),
    }


@pytest.mark.parametrize("case", ["sr2", "inpaint-per-image-noisy", "blur-noisy-partial-start", "sr2-num-samples-std"])
def test_eager_engine_is_bitwise_restorer(den, images, case):
    c = _cases(images)[case]
    op, kw, rkw = c["op"], c["kw"], c.get("restorer", {})
    y = op(images)
    ref = Restorer(den, steps=STEPS, **rkw).restore(y, op, **kw)
    out = E.restorer(den, "eager", steps=STEPS, **rkw).restore(y, op, **kw)
    for a, b in zip(ref if isinstance(ref, tuple) else (ref,), out if isinstance(out, tuple) else (out,)):
        assert torch.equal(a, b)


def test_class_conditional(images):
    den = tiny_denoiser(num_classes=10)
    op = SuperResolution(2)
    ref = Restorer(den, steps=STEPS).restore(op(images), op, seed=4, class_labels=[1, 7, 3])
    eng = E.Engine(den, E.EngineConfig(steps=STEPS))
    assert torch.equal(eng.restore(op(images), op, seed=4, class_labels=[1, 7, 3]), ref)
    assert eng.stats["eager"] == 1


def test_weights_frozen_no_grad_and_caller_model_untouched(den, images):
    op = SuperResolution(2)
    before = {n: p.detach().clone() for n, p in den.named_parameters()}
    eng = E.restorer(den, "eager", steps=STEPS, precision="bf16")
    eng.restore(op(images), op, seed=0)
    assert all(p.grad is None and not p.requires_grad for p in eng.denoiser.parameters())
    assert all(p.grad is None and p.requires_grad for p in den.parameters()), "copy_model=True leaves the caller's model alone"
    assert all(torch.equal(before[n], p) and p.dtype == torch.float32 for n, p in den.named_parameters())
    assert eng.denoiser.net.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16  # body conv cast (ADM recipe)
    assert eng.denoiser.net.out[2].weight.dtype == torch.float32  # head stays float32

    own = tiny_denoiser()
    eng = E.restorer(own, "eager", steps=STEPS, precision="fp32", copy_model=False)  # a fixed configuration: in place
    eng.restore(op(images), op, seed=0)
    assert eng.denoiser.net is own.net and not any(p.requires_grad or p.grad is not None for p in own.parameters())


@pytest.mark.parametrize("precision,channels_last", sorted(STEP_RTOL))
def test_one_step_in_precision_matches_float64(den, images, precision, channels_last):
    op = SuperResolution(2)
    eng = E.restorer(den, "eager", steps=STEPS, precision=precision, channels_last=channels_last)
    plan = eng.plan(op(images), op, seed=2)
    i = 2  # t ≈ 250: a step where x̂ is well conditioned
    x = (plan.coefs["alpha_t"][i].sqrt() * images + (1 - plan.coefs["alpha_t"][i]).sqrt() * gaussian_no_sync(plan.keys, 77, (1, 16, 16))).contiguous()
    ref, _ = pigdm_step(
        float64_copy(den), x.double(), {n: v[i].double() if n != "t" else v[i] for n, v in plan.coefs.items()},
        plan.y.double(), plan.y_pinv.double(), op, gaussian_no_sync(plan.keys, i, (1, 16, 16), torch.float64),
    )  # fmt: skip
    xs = x.clone()
    counter = torch.tensor(i)
    E.engine_step_(eng.denoiser, op, xs, counter, plan.coefs, plan.y, plan.y_pinv, plan.keys, None, None)
    assert int(counter) == i + 1 and xs.dtype == torch.float32
    err = float((xs.double() - ref).norm() / ref.norm())
    assert err < STEP_RTOL[(precision, channels_last)], err


def test_autocast_for_networks_without_to_precision(den, images):
    class Plain(torch.nn.Module):  # no to_precision: the engine runs it under autocast
        def __init__(self, net):
            super().__init__()
            self.inner = net

        def forward(self, x, t):
            return self.inner(x, t)

    plain = tiny_denoiser()
    plain.net = Plain(plain.net)
    op = SuperResolution(2)
    eng = E.restorer(plain, "eager", steps=STEPS, precision="bf16")
    assert isinstance(eng.denoiser.net, E.precision.NetworkAdapter) and eng.denoiser.net.autocast_dtype == torch.bfloat16
    out = eng.restore(op(images), op, seed=0)
    ref = Restorer(den, steps=STEPS).restore(op(images), op, seed=0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert float((out - ref).abs().mean()) < 0.05


def test_memory_flat_across_steps_eager(images):
    den = tiny_denoiser()
    op = SuperResolution(2)
    eng = E.restorer(den, "eager", steps=40)
    plan = eng.plan(op(images), op, seed=1)
    eng.run_plan(plan)  # warm the allocator
    rss, tensors = [], []

    def cb(d):
        assert d["x"].grad_fn is None and not d["x"].requires_grad
        rss.append(rss_bytes())
        if d["i"] % 10 == 0:
            gc.collect()
            tensors.append(sum(torch.is_tensor(o) for o in gc.get_objects()))

    eng.run_plan(plan, callback=cb)
    # A retained autograd graph would add ~8 MB per step here (measured); allocator jitter is a few KB.
    assert rss[-1] - rss[5] < 1 << 20, [(r - rss[5]) >> 10 for r in rss[5::5]]
    assert len(set(tensors)) == 1, tensors


def test_restore_callback_like_restorer(den, images):
    op = SuperResolution(2)
    seen = []
    E.restorer(den, steps=STEPS).restore(op(images), op, callback=lambda d: seen.append((d["i"], int(d["t"]), d["x"].shape)))
    ref = []
    Restorer(den, steps=STEPS).restore(op(images), op, callback=lambda d: ref.append((d["i"], int(d["t"]), d["x"].shape)))
    assert seen == ref and len(seen) == STEPS


def test_gather_step_wraps_and_reads_device_counter():
    tables = {"t": torch.tensor([9, 5, 1]), "c1": torch.tensor([0.1, 0.2, 0.3])}
    out = E.gather_step_no_sync(tables, torch.tensor(4))
    assert out["t"].shape == () and int(out["t"]) == 5 and float(out["c1"]) == pytest.approx(0.2)


def test_config_validation(den):
    with pytest.raises(ValueError, match="backend"):
        E.EngineConfig(backend="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        E.EngineConfig(precision="int8")
    with pytest.raises(ValueError, match="batch_sizes"):
        E.EngineConfig(batch_sizes=(0, 4))
    assert E.EngineConfig(batch_sizes=[8, 1, 8]).batch_sizes == (1, 8)
    with pytest.raises(ValueError, match="CUDA"):
        E.restorer(den, "cudagraph")
    with pytest.raises(ValueError, match="steps"):
        E.restorer(den, steps=0)


def test_keys_are_batch_invariant_through_the_engine(den, images):
    """In float64, so the convolutions' batch-size-dependent float32 rounding cannot hide a noise mix-up."""
    op = SuperResolution(2).double()
    eng = E.restorer(float64_copy(den), "eager", steps=STEPS)
    y = op(images.double())
    batch = eng.restore(y, op, seed=[10, 11, 12])
    single = eng.restore(y[1:2], op, seed=[11])
    torch.testing.assert_close(single[0], batch[1], atol=1e-9, rtol=0)
    assert torch.equal(stream_keys([11]), stream_keys([10, 11, 12])[1:2])


def test_clip_denoised_reaches_the_step_and_the_queue(den, images):
    op = SuperResolution(2)
    y = op(images)
    literal = Restorer(den, steps=STEPS, clip_denoised=False).restore(y, op, seed=[1, 2, 3])
    eng = E.restorer(den, "eager", steps=STEPS, clip_denoised=False, batch_sizes=(4,))
    assert torch.equal(eng.restore(y, op, seed=[1, 2, 3]), literal)
    assert not torch.equal(E.restorer(den, "eager", steps=STEPS).restore(y, op, seed=[1, 2, 3]), literal)
    q = eng.queue("throughput")
    for i in range(3):  # three requests merged into one batch: concat_plans must keep the setting
        q.submit(y[i : i + 1], op, seed=i + 1)
    assert torch.equal(torch.cat(q.run()), literal)


@pytest.mark.parametrize("machine,native,warns", [("x86_64", False, True), ("x86_64", True, False), ("aarch64", False, False)])
def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, machine, native, warns):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        E.restorer(tiny_denoiser(), "eager", precision="bf16", steps=2)
        E.restorer(tiny_denoiser(), "eager", precision="fp32", steps=2)
    slow = [w for w in caught if "slower than 'fp32'" in str(w.message)]
    assert len(slow) == int(warns) and all(w.category is RuntimeWarning for w in slow)
