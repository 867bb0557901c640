"""Quantize and LowDynamicRange: values, exact range consistency, specs, bad input."""
import pytest
import torch

from pgdm.operators import Compose, JPEG, LowDynamicRange, Quantize, SuperResolution, parse


@pytest.mark.parametrize("op", [Quantize(1), Quantize(4), Quantize(8), LowDynamicRange(), LowDynamicRange(-0.3, 0.8, 6)], ids=lambda o: o.spec)
def test_range_consistency_exact(op):
    """h(h†(h(x))) == h(x) bit for bit, including inputs outside [-1, 1] and exactly on bin edges."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(2, 3, 17, 13, generator=g) * 2.4 - 1.2, torch.linspace(-1, 1, 2 * 3 * 17 * 13).view(2, 3, 17, 13)])
    y = op(x)
    assert torch.equal(op(op.pinv(y)), y)
    assert torch.equal(op.pinv(op(op.pinv(y))), op.pinv(y))  # h† ∘ h idempotent
    levels = 2**op.bits
    k = (y + 1) * levels / 2
    assert torch.equal(k, k.round()) and k.min() >= 0 and k.max() <= levels - 1  # on the grid


def test_quantize_values_floor_on_unit_scale():
    op = Quantize(2)  # bins of width 0.25 on [0, 1]
    x = torch.tensor([-1.0, -0.51, -0.5, 0.0, 0.49, 0.5, 0.99, 1.0, 3.0]).view(1, 1, 1, -1)
    assert op(x).flatten().tolist() == [-1.0, -1.0, -0.5, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    assert torch.equal(op.pinv(op(x)), op(x))  # identity on the grid


def test_ldr_paper_setting():
    """App. A.5: clip [-1, 1] to [-0.6, 0.6], then 8-bit values to 4 bits; h† clips (Eq. 22)."""
    op = LowDynamicRange()
    x = torch.tensor([-1.0, -0.6, -0.2, 0.0, 0.59, 1.0]).view(1, 1, 1, -1)
    y = op(x)
    assert y.flatten().tolist() == [-0.625, -0.625, -0.25, 0.0, 0.5, 0.5]
    assert torch.equal(op.pinv(y), torch.tensor([-0.6, -0.6, -0.25, 0.0, 0.5, 0.5]).view_as(y))
    assert op.bits == 4 and (op.lo, op.hi) == (-0.6, 0.6) and not op.linear


@pytest.mark.parametrize("spec,cls,attrs", [
    ("quant4", Quantize, dict(bits=4, lo=-1.0, hi=1.0)),
    ("ldr", LowDynamicRange, dict(bits=4, lo=-0.6, hi=0.6)),
    ("ldr3-0.5", LowDynamicRange, dict(bits=3, lo=-0.5, hi=0.5)),
])
def test_spec_round_trip(spec, cls, attrs):
    op = parse(spec, (3, 8, 8))
    assert type(op) is cls and op.spec == spec and all(getattr(op, k) == v for k, v in attrs.items())
    assert parse(op.spec, (3, 8, 8)).spec == spec


def test_chains_with_linear_and_jpeg():
    op = parse("sr2+quant5+jpeg50-444", (3, 32, 32))
    assert isinstance(op, Compose) and not op.linear and op.spec == "sr2-pool+quant5+jpeg50-444"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = op(x)
    assert y.shape == (2, 3, 16, 16) and op.pinv(y).shape == x.shape
    by_hand = Compose([SuperResolution(2), Quantize(5), JPEG(50, subsampling="444")])
    assert torch.equal(by_hand(x), y)


@pytest.mark.parametrize("make,match", [
    (lambda: Quantize(0), "bits must be an integer in 1..16"),
    (lambda: Quantize(17), "bits must be an integer in 1..16"),
    (lambda: Quantize(2.5), "bits must be an integer in 1..16"),
    (lambda: LowDynamicRange(0.6, -0.6), "-1 ≤ lo < hi ≤ 1"),
    (lambda: LowDynamicRange(-2.0, 0.5), "-1 ≤ lo < hi ≤ 1"),
    (lambda: Quantize(4)(torch.zeros(3, 8, 8)), r"\(B, C, H, W\)"),
    (lambda: Quantize(4)(torch.zeros(1, 3, 8, 8, dtype=torch.int64)), "floating-point"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sigma_y_rejected():
    import pgdm
    from pgdm.sampler import SamplerSettings, plan_sampling

    op = LowDynamicRange()
    den = pgdm.Denoiser(torch.nn.Identity(), pgdm.schedules.linear(1000))
    with pytest.raises(ValueError, match="non-linear"):
        plan_sampling(den, op(torch.zeros(1, 3, 8, 8)), op, SamplerSettings(steps=10), sigma_y=0.05)


@pytest.mark.parametrize("spec", ["quant3", "quant4", "ldr"])
def test_measurement_survives_an_8bit_file(spec):
    """y written as an 8-bit PNG and read back snaps to exactly the measured levels."""
    from pgdm.io import to_uint8
    from pgdm.ops import parse

    op = parse(spec, (1, 16, 16))
    y = op(torch.rand(2, 1, 16, 16) * 2 - 1)
    read = torch.stack([torch.from_numpy(to_uint8(v)).float()[None] for v in y]) / 127.5 - 1
    assert torch.equal(op.nearest_level(read), y)
