"""Operators refuse what they cannot take with one-line errors naming the got and expected sizes; the blur
pseudo-inverse is the numerical pseudo-inverse of the blur matrix."""
import math

import pytest
import torch

from pgdm.ops import Blur, Compose, Identity, Inpaint, SuperResolution, center_box_mask, parse
from pgdm.validate import ArgumentTypeError
from test_helpers import dense


def _one_line(info):
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec, shape, match",
    [
        (None, (1, 32, 32), r"operator spec must be a non-empty string .*, got None"),
        (3, (1, 32, 32), r"operator spec must be a non-empty string .*, got 3"),
        ("  ", (1, 32, 32), r"operator spec must be a non-empty string"),
        ("sr4++blur-uniform9", (1, 32, 32), r"empty operator name in spec 'sr4\+\+blur-uniform9'"),
        ("sr4+", (1, 32, 32), r"empty operator name"),
        ("blur", (1, 32, 32), r"unknown operator 'blur' in spec; expected one of: identity"),
        ("sr4-lanczos", (1, 32, 32), r"unknown operator 'sr4-lanczos'"),
        ("sr4", 3, r"shape must be the clean image's \(C, H, W\), got 3"),
        ("sr4", (32, 32), r"shape must be the clean image's \(C, H, W\)"),
        ("sr4", (1, 32.0, 32), r"shape must be an integer, got float 32.0"),
        ("sr4", (1, 0, 32), r"shape must be an integer ≥ 1, got 0"),
        ("sr3", (1, 32, 32), r"sr3: the 32×32 image is not divisible by 3; crop it to 30×30"),
        ("sr4", (1, 2, 8), r"sr4: the 2×8 image is not divisible by 4; it must be at least 4×4"),
        ("sr0", (1, 32, 32), r"super-resolution factor must be a positive integer"),
        ("blur-uniform99999", (1, 32, 32), r"blur-uniform99999: the 99999×99999 kernel is larger than the 32×32 image \(at most 32\)"),
        ("blur-gaussian61", (3, 32, 48), r"blur-gaussian61: the 61×61 kernel is larger than the 32×48 image \(at most 32\)"),
        ("sr2+blur-motion33", (1, 64, 64), r"blur-motion33: the 33×33 kernel is larger than the 32×32 image"),
    ],
)
def test_parse_refuses_bad_specs(spec, shape, match):
    with pytest.raises(ValueError, match=match) as info:
        parse(spec, shape)
    _one_line(info)


def test_parse_refuses_a_float_seed():
    with pytest.raises(ArgumentTypeError, match="seed must be an integer"):
        parse("inpaint-random", (1, 8, 8), seed=0.5)


def test_huge_blur_kernel_is_refused_before_allocating(monkeypatch):
    def no_kernel(*args, **kwargs):
        raise AssertionError("the kernel was built")

    monkeypatch.setattr(Blur, "__init__", no_kernel)
    with pytest.raises(ValueError, match="larger than the 32×32 image"):
        parse("blur-uniform99999", (1, 32, 32))


def test_sr_built_for_a_size_checks_measurements_and_images():
    op = parse("sr4", (1, 32, 32))
    assert op.size == (32, 32)
    with pytest.raises(ValueError, match=r"sr4-pool: expected a measurement of 8×8 \(the 32×32 images ÷ 4\), got 7×7") as info:
        op.pinv(torch.zeros(1, 1, 7, 7))
    _one_line(info)
    with pytest.raises(ValueError, match=r"expected a measurement of 8×8 .*, got 7×7"):
        op.regularized_pinv(torch.zeros(1, 1, 7, 7), 0.1)
    with pytest.raises(ValueError, match=r"expected a measurement of 8×8"):
        op.adjoint(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"sr4-pool: built for 32×32 images, got 28×28"):
        op(torch.zeros(1, 1, 28, 28))
    assert op.pinv(op(torch.zeros(2, 1, 32, 32))).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"sr4-pool: the 30×32 image is not divisible by 4; crop it to 28×32"):
        SuperResolution(4, size=(30, 32))


def test_sr_without_a_size_takes_any_divisible_size():
    op = SuperResolution(4)
    assert op.pinv(torch.zeros(1, 1, 7, 7)).shape == (1, 1, 28, 28)


def test_composed_chain_checks_every_part():
    op = parse("sr2+inpaint-center", (1, 16, 16))
    assert isinstance(op, Compose)
    with pytest.raises(ValueError, match="does not match mask"):
        op.pinv(torch.zeros(1, 1, 7, 7))
    op = parse("blur-uniform3+sr2", (1, 16, 16))
    with pytest.raises(ValueError, match=r"sr2-pool: expected a measurement of 8×8"):
        op.pinv(torch.zeros(1, 1, 9, 9))
    for spec in ("jpeg50", "blur-uniform3", "inpaint-center"):  # size-preserving ops pass a wrong size on unchanged
        with pytest.raises(ValueError) as info:
            parse(spec, (3, 16, 16)).pinv(torch.zeros(1, 1, 2, 2))
        _one_line(info)


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), "0.1"])
@pytest.mark.parametrize(
    "op, shape",
    [
        (Identity(), (1, 1, 4, 4)),
        (Inpaint(center_box_mask(4, 4)), (1, 1, 4, 4)),
        (SuperResolution(2), (1, 1, 2, 2)),
        (Blur.uniform(3), (1, 1, 4, 4)),
        (Compose([Blur.uniform(3), SuperResolution(2)]), (1, 1, 2, 2)),
    ],
)
def test_regularized_pinv_refuses_bad_lambda(op, shape, lam):
    with pytest.raises(ValueError, match=r"lam must be a finite number ≥ 0") as info:
        op.regularized_pinv(torch.zeros(shape), lam)
    _one_line(info)


def _psnr(a, b):
    return 10 * math.log10(4 / float((a - b).square().mean()))


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: Blur.uniform(9), 32),  # no exact spectral zeros on 32×32: the smallest |K̂| is 2.9e-4 of the largest
        (lambda: Blur.uniform(9), 12),  # exact zeros at k = 4, 8
        (lambda: Blur.gaussian(9, 2.0), 16),  # a tail far below rounding level
        (lambda: Blur.gaussian(15, 3.0), 32),
        (lambda: Blur.motion(7, seed=2), (9, 10)),
    ],
)
def test_blur_pinv_is_the_dense_numerical_pseudoinverse(make, size):
    h, w = (size, size) if isinstance(size, int) else size
    op = make().double()
    H = dense(op, (1, h, w))
    y = op(torch.rand(3, 1, h, w, dtype=torch.float64) * 2 - 1) + 0.01 * torch.randn(3, 1, h, w, dtype=torch.float64)
    expected = y.flatten(1) @ torch.linalg.pinv(H).T  # default rtol max(m, n)·eps: no |K̂| lies between it and Blur's
    torch.testing.assert_close(op.pinv(y).flatten(1), expected, rtol=0, atol=1e-8 * float(expected.abs().max()))


def test_noiseless_uniform9_measurement_is_inverted():
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = Blur.uniform(9)
    assert _psnr(op.pinv(op(x)), x) > 90  # float32: every frequency of y is kept
    op64 = Blur.uniform(9).double()
    assert _psnr(op64.pinv(op64(x.double())), x.double()) > 200
    truncated = Blur(torch.full((9, 9), 1 / 81), rtol=1e-3)  # the 32 frequencies below 1e-3 of the largest are dropped
    assert _psnr(truncated.pinv(truncated(x)), x) < 50


def test_default_cutoff_scales_with_the_longer_side():
    from pgdm.operators.functional import kernel_spectrum

    # 256×256 float32: the box blur's 33024 rfft frequencies reach 4.5e-6 of the largest; max(H, W)·eps = 3.1e-5
    # zeroes only those below it (34), where the dense rule H·W·eps = 7.8e-3 would zero 11548.
    ratio = kernel_spectrum(torch.full((9, 9), 1 / 81, dtype=torch.float64), 256, 256).abs()
    ratio = ratio / ratio.max()
    op = Blur.uniform(9)
    y_hat = torch.fft.rfft2(op.pinv(op(torch.randn(1, 1, 256, 256))))
    zeroed = int((y_hat.abs() < 1e-6 * float(y_hat.abs().max())).sum())
    assert zeroed == int((ratio <= 256 * torch.finfo(torch.float32).eps).sum()) == 34


def test_blur_rtol_is_checked():
    with pytest.raises(ValueError, match=r"blur rtol must be in \[0, 1\) or None"):
        Blur(torch.ones(3, 3), rtol=-1.0)
