"""The server's Python core (DynamicBatcher on RestoreQueue) without HTTP: batched results against the engine
run alone (float64: batching changes nothing beyond 1e-9), NaN isolation, queue limit, cancellation, draining,
NumPy in and out."""
import threading

import numpy as np
import pytest
import torch

from engine_helpers import float64_copy, tiny_denoiser
from pgdm.engine import Engine, EngineConfig
from pgdm.ops import Inpaint, SuperResolution, random_pixel_mask
from pgdm.entrypoints.serve import Closed, DynamicBatcher, EnginePool, QueueFull, SamplingError

STEPS = 2


def _images(n, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=gen) * 2 - 1).to(dtype)


def _batcher(den, **kw):
    batches = []
    b = DynamicBatcher(EnginePool(den, EngineConfig(steps=STEPS)), on_batch=batches.append, **kw)
    return b, batches


def test_batched_requests_equal_each_alone_float64():
    den = float64_copy(tiny_denoiser())
    batcher, batches = _batcher(den, max_batch=8, max_wait_s=600)  # the window closes when 8 rows are pending
    sr, masks = SuperResolution(2), random_pixel_mask(16, 16, 0.5, seed=2, batch=2)
    requests = [
        (sr(_images(1, 0, torch.float64)), sr, dict(seed=4)),
        (sr(_images(2, 1, torch.float64)), sr, dict(seed=[7, 9], sigma_y=0.05)),
        (Inpaint(masks)(_images(2, 2, torch.float64)), Inpaint(masks), dict(seed=1, num_samples=1)),
        (sr(_images(1, 3, torch.float64)), sr, dict(seed=11, num_samples=3)),
    ]
    futures = [batcher.submit(y, op, **kw) for y, op, kw in requests]
    results = [f.result() for f in futures]
    batcher.close()
    assert sorted(batches) == [2, 2, 4]  # inpainting (2 rows), noisy SR (2), noiseless SR (1 + 3 samples)
    alone = Engine(float64_copy(tiny_denoiser()), EngineConfig(steps=STEPS))
    for (y, op, kw), res in zip(requests, results):
        ref = alone.restore(y, op, **kw)
        torch.testing.assert_close(res.x, ref, rtol=0, atol=1e-9)
        assert res.std is None and res.queued_s >= 0 and res.run_s > 0
        rms = (op(ref) - y).flatten(1).norm(dim=1) / y[0].numel() ** 0.5
        assert res.consistency_rms == pytest.approx(rms.tolist(), abs=1e-9)


def test_nan_in_sampling_fails_that_request_only():
    den = tiny_denoiser(num_classes=10)
    with torch.no_grad():
        den.net.label_emb.weight[7] = float("nan")  # class 7 breaks the network for its rows only
    batcher, batches = _batcher(den, max_batch=2, max_wait_s=600)
    op = SuperResolution(2)
    y = op(_images(2, 0))
    bad, good = batcher.submit(y[:1], op, seed=0, class_labels=7), batcher.submit(y[1:], op, seed=1, class_labels=3)
    with pytest.raises(SamplingError, match="NaN"):
        bad.result()
    x = good.result().x
    batcher.close()
    assert batches == [2] and torch.isfinite(x).all()
    ref = Engine(den, EngineConfig(steps=STEPS)).restore(y[1:], op, seed=1, class_labels=3)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-4)  # batch 2 vs batch 1: float32 rounding


def test_bad_requests_rejected_at_submit_and_queue_limit():
    den = tiny_denoiser()
    batcher, _ = _batcher(den, max_batch=4, max_wait_s=600, max_queue=2)
    op = SuperResolution(2)
    y = op(_images(1, 0))
    with pytest.raises(ValueError, match="NaN"):
        batcher.submit(torch.full_like(y, float("nan")), op)
    with pytest.raises(ValueError, match="seed"):
        batcher.submit(y, op, seed=[1, 2])
    with pytest.raises(ValueError, match="steps"):
        batcher.submit(y, op, steps=0)
    first = batcher.submit(y, op, seed=0)
    cancelled = batcher.submit(y, op, seed=1)
    with pytest.raises(QueueFull) as full:
        batcher.submit(y, op, seed=2)
    assert full.value.retry_after >= 1 and batcher.depth == 2
    assert cancelled.cancel()  # a caller that gives up before its batch starts is dropped
    closer = threading.Thread(target=batcher.close)
    closer.start()  # closing ends the wait for more requests and finishes the pending one
    assert torch.isfinite(first.result().x).all()
    closer.join()
    with pytest.raises(Closed):
        batcher.submit(y, op)


def test_numpy_in_numpy_out():
    den = tiny_denoiser()
    batcher, _ = _batcher(den, max_wait_s=0)
    op = SuperResolution(2)
    y = op(_images(2, 5))
    res = batcher.submit(y.numpy(), op, seed=3, num_samples=2, return_std=True).result()
    batcher.close()
    assert isinstance(res.x, np.ndarray) and isinstance(res.std, np.ndarray) and res.x.dtype == np.float32
    ref, std = Engine(den, EngineConfig(steps=STEPS)).restore(y, op, seed=3, num_samples=2, return_std=True)
    assert np.array_equal(res.x, ref.numpy()) and np.array_equal(res.std, std.numpy())
