"""CUDA-graph backend (run by benchmarks/device_check.sh): equality, graph cache and padding, no syncs, flat memory.

Tolerances as in test_engine_compile.py: relative L2 error of the unclamped samples against a float64
run of the same plan, within 4× the eager float32 sampler's own error (both under strict IEEE float32:
``precision_context("fp32")`` turns cuDNN's default TF32 off); bf16 within ``BF16_REL`` (CPU measures
2.6–2.9e-2 for this model). float64 runs (the queue test) must match unbatched runs to 1e-9.
"""
import warnings

import pytest
import torch

import pgdm.engine as E
from engine_helpers import float64_copy, tiny_denoiser
from pgdm.engine.batching import pad_plan
from pgdm.engine.precision import precision_context
from pgdm.ops import Inpaint, SuperResolution, center_box_mask, random_pixel_mask
from pgdm.sampler import run_eager

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 4
BF16_REL = 0.1
DEV = torch.device("cuda")


@pytest.fixture(scope="module")
def setup():
    den = tiny_denoiser().to(DEV)
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(5, 1, 16, 16, generator=gen) * 2 - 1).to(DEV)
    # compile_mode="default": max-autotune would spend minutes tuning kernels for a 16×16 toy
    eng = E.restorer(den, "cudagraph", steps=STEPS, batch_sizes=(1, 4), compile_mode="default")
    return den, eng, images


def _rel_err_vs_float64(den, eng, y, op, seed, precision="fp32"):
    plan = eng.plan(y, op, seed=seed)
    plan64 = E.restorer(float64_copy(den), steps=STEPS).plan(y.double(), op, seed=seed)
    ref64 = run_eager(float64_copy(den), plan64)
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    with precision_context("fp32", DEV):
        err_eager = rel(run_eager(den, plan))
    return rel(eng.run_plan(plan)), err_eager


def test_graph_matches_float64_and_is_cached(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    y = op(images[:3])
    err_graph, err_eager = _rel_err_vs_float64(den, eng, y, op, 5)
    assert err_graph <= 4 * err_eager, (err_graph, err_eager)
    assert eng.stats["captures"] == 1 and eng.stats["graph"] == 1
    a = eng.restore(y, op, seed=5)
    b = eng.restore(y, SuperResolution(2), seed=5)  # equal operator, new object: same graph
    # same graph, same inputs; not asserted bitwise: cuDNN/attention backward kernels may use atomics
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert eng.stats["captures"] == 1 and eng.stats["graph"] == 3
    (key,) = eng._graphs.graphs
    assert (key.batch, key.channels, key.height, key.width, key.dtype, key.noisy) == (4, 1, 16, 16, torch.float32, False)


def test_padding_and_eager_fallback(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    captures = eng.stats["captures"]
    eng.restore(op(images[:1]), op, seed=1)  # batch 1: its own graph
    assert eng.stats["captures"] == captures + 1
    eng.restore(op(images[:2]), op, seed=1)  # batch 2 pads to the batch-4 graph
    assert eng.stats["captures"] == captures + 1
    out = eng.restore(op(images), op, seed=1)  # batch 5 > every captured size: eager
    assert eng.stats["eager_fallback"] == 1 and out.shape == (5, 1, 16, 16)


def test_replay_loop_never_syncs_and_memory_is_flat(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    plan = eng.plan(op(images[:4]), op, seed=3)
    eng.run_plan(plan)
    torch.cuda.synchronize()
    mem = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            eng.run_plan(plan, callback=lambda d: mem.append(torch.cuda.memory_allocated()))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(set(mem)) == 1, mem
    assert all(p.grad is None and not p.requires_grad for p in eng.denoiser.parameters())
    assert all(p.grad is None for p in den.parameters())


def test_captured_eager_step_and_sync_detection(setup):
    den, _, images = setup
    eng = E.restorer(den, "cudagraph", steps=STEPS, batch_sizes=(4,), compile=False)
    masks = random_pixel_mask(16, 16, 0.5, seed=2, batch=3).to(DEV)
    op = Inpaint(masks)  # noisy inpainting: no tensors built from Python scalars inside the step
    plan = eng.plan(op(images[:3]), op, sigma_y=0.1, seed=[1, 2, 3])
    with precision_context("fp32", DEV):
        ref = run_eager(den, pad_plan(plan, 4))[:3]  # the graph runs the batch padded to 4: cuDNN picks per batch size
    out = eng.run_plan(plan)
    assert eng.stats["captures"] == 1
    assert float((out - ref).norm() / ref.norm()) < 1e-5
    # SR's h† builds its λ = 0 on the device (torch.full), so the noiseless SR step captures too; a host sync in
    # it would be caught by the checked warm-up and the key would run eagerly with a RuntimeWarning instead.
    sr = SuperResolution(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = eng.restore(sr(images[:3]), sr, seed=4)
    assert eng.stats["captures"] == 2 and eng.stats["uncapturable"] == 0 and torch.isfinite(out).all()


def test_bf16_channels_last_graph(setup):
    den, _, images = setup
    # the eager step captured (no extra Inductor compile)
    eng = E.restorer(den, "cudagraph", steps=STEPS, batch_sizes=(4,), precision="bf16", channels_last=True, compile=False)
    op = Inpaint(center_box_mask(16, 16).to(DEV))
    err_graph, _ = _rel_err_vs_float64(den, eng, op(images[:4]), op, 7)
    assert err_graph < BF16_REL and eng.stats["captures"] == 1
    assert eng.denoiser.net.net.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16


def test_compiled_bf16_graph_at_batch_1(setup):
    # the path the ADM-256 latency benchmark takes: Inductor-compiled bf16 step, captured, batch 1
    den, _, images = setup
    eng = E.restorer(den, "cudagraph", steps=STEPS, batch_sizes=(1,), precision="bf16", compile_mode="default")
    op = SuperResolution(2)
    err_graph, _ = _rel_err_vs_float64(den, eng, op(images[:1]), op, 8)
    assert err_graph < BF16_REL and eng.stats["captures"] == 1 and eng.stats["graph"] == 1


def test_queue_on_graphs_equals_unbatched_float64(setup):
    den, _, images = setup
    den64 = float64_copy(den)
    eng = E.restorer(den64, "cudagraph", steps=STEPS, batch_sizes=(1, 2, 4), compile=False)
    x = images.double()
    per = Inpaint(random_pixel_mask(16, 16, 0.5, seed=5, batch=3).to(DEV))
    shared = Inpaint(center_box_mask(16, 16).to(DEV))
    reqs = [
        dict(y=per(x[:3]), op=per, sigma_y=0.1, seed=[1, 2, 3]),
        dict(y=shared(x[3:4]), op=shared, sigma_y=0.2, seed=4),
        dict(y=shared(x[4:5]), op=shared, seed=5, num_samples=2, return_std=True),
    ]
    q = eng.queue()
    for r in reqs:
        q.submit(**r)
    out = q.run()
    assert q.batches_run == [4, 2]  # noisy inpainting (3 + 1 rows), noiseless (1 image × 2 samples)
    for r, o in zip(reqs, out):
        kw = {k: v for k, v in r.items() if k not in ("y", "op")}
        ref = eng.restore(r["y"], r["op"], **kw)
        for u, v in zip(o if isinstance(o, tuple) else (o,), ref if isinstance(ref, tuple) else (ref,)):
            torch.testing.assert_close(u, v, atol=1e-9, rtol=0)
    assert eng.stats["graph"] >= 2 and eng.stats["eager_fallback"] == 0
