"""Batch scheduling and the operators' batch semantics: grouping, padding, splitting, request order, equality with unbatched runs."""
import pytest
import torch

import pgdm.engine as E
from engine_helpers import tiny_denoiser
from pgdm.engine.batching import concat_plans, group_key, pad_plan, slice_plan
from pgdm.ops import Blur, Compose, Inpaint, Operator, SuperResolution, center_box_mask, random_pixel_mask

STEPS = 3
# Merged batches change the network's batch size, which changes CPU convolution blocking, i.e. rounding, and
# random weights amplify rounding at t ≈ 999 (about 6e-5 in float32). The queue tests therefore run in
# float64 (float64 weights and measurements), where batching must not change any result beyond 1e-9.
ATOL = 1e-9


class Floor(Operator):
    """A non-linear operator the engine does not know: compared by identity."""

    def forward(self, x):
        return torch.floor((x + 1) * 2).clamp(0, 3)

    def pinv(self, y):
        return (y + 0.5) / 2 - 1


def _img(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=gen, dtype=torch.float64) * 2 - 1


def test_signatures():
    sig = lambda op: op.signature()  # noqa: E731
    assert sig(SuperResolution(2)) == sig(SuperResolution(2)) != sig(SuperResolution(4))
    assert sig(SuperResolution(2)) != sig(SuperResolution(2, "bicubic"))
    assert sig(Blur.uniform(3)) == sig(Blur.uniform(3)) != sig(Blur.gaussian(3, 1.0))
    assert sig(Blur(torch.ones(3, 3) / 9)) != sig(Blur(torch.eye(3) / 3))  # same name "custom", other kernel
    # masks are per-row data: any two 16×16 single-channel masks share a signature
    assert sig(Inpaint(center_box_mask(16, 16))) == sig(Inpaint(random_pixel_mask(16, 16, batch=4)))
    assert sig(Inpaint(center_box_mask(16, 16))) != sig(Inpaint(center_box_mask(8, 8)))
    f = Floor()
    assert sig(f) == sig(f) != sig(Floor())
    assert sig(SuperResolution(2) * Inpaint(center_box_mask(16, 16))) == sig(SuperResolution(2) * Inpaint(random_pixel_mask(16, 16, batch=2)))


def test_operator_rows_concat_slice_pad():
    shared = Inpaint(center_box_mask(16, 16))
    per = Inpaint(random_pixel_mask(16, 16, batch=3, seed=1))
    merged = shared.concat_rows([per], [2, 3])
    assert merged.mask.shape == (5, 1, 16, 16)
    assert torch.equal(merged.mask[:2], shared.mask.expand(2, 1, 16, 16)) and torch.equal(merged.mask[2:], per.mask)
    assert shared.concat_rows([Inpaint(center_box_mask(16, 16))], [1, 1]) is shared
    assert torch.equal(merged.slice_rows(5, 1, 4).mask, merged.mask[1:4])
    padded = per.pad_rows(3, 8)
    assert padded.mask.shape[0] == 8 and torch.equal(padded.mask[3:], per.mask[:1].expand(5, 1, 16, 16))
    sr = SuperResolution(2)
    assert sr.pad_rows(3, 8) is sr and sr.slice_rows(3, 0, 1) is sr and sr.is_row_independent()
    chain = Compose([Blur.uniform(3), per])
    assert chain.pad_rows(3, 4).ops[1].mask.shape[0] == 4 and not chain.is_row_independent()

    p = PerImage()  # unknown operator with per-image parameters: cannot be merged, sliced or padded
    assert p.concat_rows([p], [1, 1]) is None and p.pad_rows(1, 2) is None and p.slice_rows(2, 0, 1) is None
    static = per.static_copy(3)
    assert static.mask is not per.mask
    static.load_rows_(Inpaint(center_box_mask(16, 16)), 3)
    assert torch.equal(static.mask, center_box_mask(16, 16).expand(3, 1, 16, 16))


def test_plan_rows_roundtrip():
    den = tiny_denoiser()
    eng = E.restorer(den, steps=STEPS)
    op = Inpaint(random_pixel_mask(16, 16, batch=2, seed=4))
    a = eng.plan(op(_img(2, 0)), op, sigma_y=0.1, seed=[1, 2])
    b = eng.plan(Inpaint(center_box_mask(16, 16))(_img(1, 1)), Inpaint(center_box_mask(16, 16)), sigma_y=0.2, seed=3)
    assert group_key(a) == group_key(b)
    m = concat_plans([a, b])
    assert m.x_init.shape[0] == 3 and torch.equal(m.keys, torch.cat([a.keys, b.keys])) and m.op.mask.shape[0] == 3
    s = slice_plan(m, 2, 3)
    assert torch.equal(s.y, b.y) and torch.equal(s.op.mask, b.op.mask) and torch.equal(s.sigma_y2, b.sigma_y2)
    p = pad_plan(b, 4)
    assert p.x_init.shape[0] == 4 and torch.equal(p.x_init[3], b.x_init[0]) and torch.equal(p.keys, b.keys.expand(4))


def _requests():
    sr, blur = SuperResolution(2), Blur.uniform(3)
    per = Inpaint(random_pixel_mask(16, 16, 0.5, batch=3, seed=2))
    shared = Inpaint(center_box_mask(16, 16))
    return [
        dict(y=sr(_img(2, 10)), op=sr, seed=[1, 2]),
        dict(y=per(_img(3, 11)), op=per, sigma_y=0.1, seed=[3, 4, 5]),
        dict(y=sr(_img(1, 12)), op=SuperResolution(2), seed=7, num_samples=2, return_std=True),  # equal op, other object
        dict(y=shared(_img(1, 13)), op=shared, sigma_y=0.05, seed=8),
        dict(y=blur(_img(2, 14)), op=blur, seed=9),
    ]


def _equal(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode,max_batch,expected", [("throughput", 4, [4, 4, 2]), ("throughput", 3, [3, 1, 3, 1, 2]), ("latency", None, [2, 3, 2, 1, 2])])
def test_queue_groups_and_returns_in_request_order(mode, max_batch, expected):
    den = tiny_denoiser().double()
    eng = E.restorer(den, steps=STEPS, batch_sizes=(1, 2, 4))
    reqs = _requests()
    q = eng.queue(mode, max_batch=max_batch)
    ids = [q.submit(**r) for r in reqs]
    assert ids == list(range(len(reqs))) and len(q) == len(reqs)
    out = q.run()
    assert len(q) == 0 and q.batches_run == expected  # rows per engine batch, before padding
    for r, o in zip(reqs, out):
        kw = {k: v for k, v in r.items() if k not in ("y", "op")}
        _equal(o, eng.restore(r["y"], r["op"], **kw))
    assert isinstance(out[2], tuple) and out[2][0].shape == (1, 1, 16, 16) and out[0].dtype == torch.float64


class PerImage(Floor):
    """An unknown operator with per-image parameters (``repeat_batch`` builds a new one)."""

    def repeat_batch(self, k):
        return PerImage()


def test_queue_unknown_operators_group_by_identity():
    den = tiny_denoiser().double()
    eng = E.restorer(den, steps=STEPS)
    f, p = Floor(), PerImage()
    q = eng.queue()
    q.submit(f(_img(1, 0)), f, seed=1)
    q.submit(p(_img(1, 2)), p, seed=4)
    q.submit(f(_img(2, 1)), f, seed=[2, 3])
    q.submit(p(_img(2, 3)), p, seed=[5, 6])
    out = q.run()
    # f: one group, row-independent, merged (3 rows); p: one group that cannot merge, run request by request
    assert q.batches_run == [3, 1, 2]
    _equal(out[2], eng.restore(f(_img(2, 1)), f, seed=[2, 3]))
    _equal(out[3], eng.restore(p(_img(2, 3)), p, seed=[5, 6]))
    with pytest.raises(ValueError, match="mode"):
        eng.queue("fastest")


def test_queue_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        E.restorer(tiny_denoiser(), steps=STEPS).queue("fastest")


def test_static_operators_snapshot_content_keyed_ops():
    from pgdm.ops import JPEG

    op = JPEG(quality=50)
    sig = op.signature()
    static = op.static_copy(4)
    assert static is not op and static.signature() == sig
    op.update_tables(torch.full((2, 8, 8), 7))
    assert op.signature() != sig and static.signature() == sig  # the snapshot keeps its tables
    assert JPEG(quality=50).signature() == sig != JPEG(quality=50, size=(30, 30)).signature()
