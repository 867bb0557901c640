"""The fused spectral filter of the blur pseudo-inverse against its torch reference."""
import pytest
import torch

from pgdm.kernels.spectral_filter import spectral_filter, spectral_filter_reference, spectral_filter_triton

import triton  # noqa: E402,F401  (a dev dependency: the kernels run in its interpreter on CPU)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.complex64: 1e-5, torch.complex128: 1e-12}  # relative to max |output|


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (5, 1, 23, 23), (1, 3, 9, 13)])
@pytest.mark.parametrize("lam", [0.0, "per-image"])
def test_matches_reference(dtype, shape, lam):
    g = torch.Generator().manual_seed(0)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    x_hat = torch.fft.rfft2(torch.randn(shape, generator=g, dtype=real)).to(DEVICE)
    k_hat = torch.fft.rfft2(torch.randn(shape[-2:], generator=g, dtype=real)).to(DEVICE)
    lam = torch.rand(shape[0], generator=g, dtype=real).to(DEVICE) * torch.tensor([0.0, 0.1] * shape[0], dtype=real, device=DEVICE)[: shape[0]] if lam == "per-image" else lam
    cutoff = 0.3 * k_hat.abs().max()  # a device tensor: no host sync
    ref = spectral_filter_reference(x_hat, k_hat, lam, cutoff)
    out = spectral_filter_triton(x_hat, k_hat, lam, cutoff)
    assert out.dtype == dtype and out.shape == x_hat.shape
    assert ((out - ref).abs().max() / ref.abs().max()) < TOL[dtype]
    assert torch.equal(out == 0, ref == 0)  # the same frequencies are zeroed


def test_blur_pinv_formula():
    """With λ = 0 and no cutoff the filter inverts the spectrum: irfft2(filter(rfft2(k ⊛ x))) = x."""
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    k_hat = torch.fft.rfft2(torch.rand(16, 16, dtype=torch.float64) + 1.0)
    y_hat = torch.fft.rfft2(x) * k_hat
    x_back = torch.fft.irfft2(spectral_filter(y_hat, k_hat, 0.0, 0.0), s=(16, 16))
    torch.testing.assert_close(x_back, x)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="spectral_filter"):
        spectral_filter(torch.zeros(1, 1, 4, 3, dtype=torch.complex64), torch.zeros(4, 4, dtype=torch.complex64), 0.0, 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blur_numerical_cutoff_keeps_the_small_frequencies(dtype):
    """The cutoff Blur passes (max(H, W)·eps · max|K̂|) keeps the uniform 9×9 kernel's small but nonzero frequencies on
    32×32 in both paths, and the kernel zeroes exactly what the reference zeroes."""
    from pgdm.ops import Blur
    from pgdm.operators.functional import kernel_spectrum, numerical_rtol

    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    k_hat = kernel_spectrum(torch.full((9, 9), 1 / 81, dtype=torch.float64), 32, 32).to(complex_dtype).to(DEVICE)
    cutoff = numerical_rtol(32, dtype) * k_hat.abs().max()
    assert bool((k_hat.abs() > cutoff).all())  # smallest |K̂| is 2.9e-4 of the largest: nothing to zero
    x_hat = torch.fft.rfft2(torch.randn(2, 1, 32, 32, dtype=dtype)).to(DEVICE)
    ref = spectral_filter_reference(x_hat, k_hat, 0.0, cutoff)
    out = spectral_filter_triton(x_hat, k_hat, 0.0, cutoff)
    assert torch.equal(out == 0, ref == 0) and not bool((ref == 0).any())
    assert ((out - ref).abs().max() / ref.abs().max()) < TOL[complex_dtype]
    op = Blur.uniform(9).to(DEVICE, dtype)
    x = torch.rand(2, 1, 32, 32, dtype=dtype, device=DEVICE) * 2 - 1
    assert float((op.pinv(op(x)) - x).abs().max()) < (1e-3 if dtype == torch.float32 else 1e-9)
