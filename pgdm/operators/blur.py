"""Deblurring: circular convolution, inverted in the Fourier domain."""
from __future__ import annotations

import torch

from ..kernels.spectral_filter import spectral_filter
from .base import LinearOperator, as_batch_lam
from .functional import gaussian_kernel, kernel_spectrum, motion_kernel, numerical_rtol

__all__ = ["Blur"]


class Blur(LinearOperator):
    """y = k ⊛ x, circular 2-D convolution of every channel with a (k_h, k_w) kernel centred on its middle tap.

    H = F⁻¹ diag(K̂) F, so Hᵀ multiplies by conj(K̂) and Hᵀ(HHᵀ + λI)⁻¹ by conj(K̂)/(|K̂|² + λ).
    H† is the λ = 0 case with frequencies where |K̂| ≤ rtol·max|K̂| zeroed: the singular values |K̂| at
    rounding level, which a numerical pseudo-inverse drops. By default rtol = max(H, W)·eps of the image
    dtype (3.8e-6 for float32 at 32×32): the rounding of a 2-D FFT of that size, as ``torch.linalg.pinv``'s
    max(m, n)·eps is a dense SVD's. (The dense rule on the HW×HW matrix, HW·eps, would be 7.8e-3 for float32
    at 256×256 and drop a third of the 9×9 box's frequencies.) So exact zeros (the 9×9 box on a 12×12 grid)
    and a Gaussian's far tail are zeroed, while the 9×9 box on 32×32, whose smallest |K̂| is 2.9e-4 of the
    largest, keeps every frequency a noiseless y holds. A larger ``rtol`` truncates more; with λ > 0 nothing
    is zeroed: the regularisation bounds the gain (σ_y > 0 takes that path).

    Example:
        >>> op = Blur.uniform(9)
        >>> op(torch.ones(1, 3, 32, 32)).allclose(torch.ones(1, 3, 32, 32))
        True
    """

    keyed_by_content = True
    family = "deblurring"
    decomposable = True

    def __init__(self, kernel: torch.Tensor, *, rtol: float | None = None, name: str = "custom") -> None:
        super().__init__()
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2 or kernel.numel() == 0:
            raise ValueError(f"blur kernel must be 2-D (k_h, k_w), got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all() or kernel.sum() == 0:
            raise ValueError("blur kernel must be finite with a nonzero sum")
        if rtol is not None and not 0 <= rtol < 1:
            raise ValueError(f"blur rtol must be in [0, 1) or None (the numerical default), got {rtol}")
        self.register_buffer("kernel", kernel.to(torch.get_default_dtype()))
        self.rtol, self.name = rtol, name
        self._spectra: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def uniform(cls, size: int = 9) -> "Blur":
        """size×size box blur (the 9×9 kernel of DDRM/ΠGDM's deblurring experiments)."""
        _check_size(size)
        return cls(torch.full((size, size), 1.0 / size**2), name=f"uniform{size}")

    @classmethod
    def gaussian(cls, size: int = 61, sigma: float = 3.0) -> "Blur":
        """size×size Gaussian blur of std ``sigma`` pixels."""
        _check_size(size)
        if not sigma > 0:
            raise ValueError(f"Gaussian blur std must be > 0, got {sigma}")
        return cls(gaussian_kernel(size, sigma), name=f"gaussian{size}-{sigma:g}")

    @classmethod
    def motion(cls, size: int = 61, seed: int = 0, intensity: float = 0.5) -> "Blur":
        """size×size random camera-shake kernel; the same seed gives the same kernel."""
        _check_size(size)
        return cls(motion_kernel(size, seed, intensity), name=f"motion{size}")

    @property
    def spec(self) -> str:
        return f"blur-{self.name}"

    def check_input(self, x: torch.Tensor) -> None:
        kh, kw = self.kernel.shape
        if x.ndim != 4 or x.shape[-2] < kh or x.shape[-1] < kw:
            raise ValueError(f"{self.spec}: expected (B, C, H, W) with H ≥ {kh} and W ≥ {kw}, got {tuple(x.shape)}")

    check_measurement = check_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._filter(x, self._spectrum(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return self._filter(y, self._spectrum(y).conj())

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.regularized_pinv(y, 0.0)

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        """Spectrum multiply by conj(K̂)/(|K̂|² + λ) (the Triton ``spectral_filter`` on CUDA), FFTs by torch.fft."""
        self.check_measurement(v)
        k_hat = self._spectrum(v)
        lam = as_batch_lam(lam, v).reshape(-1)  # () or (B,)
        h, w = v.shape[-2:]
        rtol = numerical_rtol(max(h, w), v.dtype) if self.rtol is None else self.rtol
        cutoff = rtol * k_hat.abs().max()  # device tensor: no host sync
        return torch.fft.irfft2(spectral_filter(torch.fft.rfft2(v), k_hat, lam, cutoff), s=(h, w))

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """The unitary 2-D DFT: (B, C, H, W) → (B, C, H, W) complex. H = U diag(|K̂|) Vᵀ with V = F⁻¹, U = F⁻¹ diag(K̂/|K̂|)."""
        return torch.fft.fft2(x, norm="ortho")

    def V(self, z: torch.Tensor) -> torch.Tensor:
        """F⁻¹z, real part (z is Hermitian-symmetric whenever it came from real images by real per-frequency scalings)."""
        return torch.fft.ifft2(z, norm="ortho").real

    def U_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        k_full = self._full_spectrum(y)
        phase = torch.where(k_full.abs() > 0, k_full.conj() / k_full.abs().clamp_min(torch.finfo(y.dtype).tiny), torch.ones_like(k_full))
        return torch.fft.fft2(y, norm="ortho") * phase

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        """(H, W) |K̂|, zero where |K̂| ≤ ``rtol``·max as in ``pinv``."""
        s = self._full_spectrum(x).abs()
        rtol = numerical_rtol(max(x.shape[-2:]), x.dtype) if self.rtol is None else self.rtol
        return torch.where(s > rtol * s.max(), s, torch.zeros_like(s))

    def _full_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel's (H, W) fft2, from its cached rfft2 (cached too)."""
        key = ("full", x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._spectra:
            h, w = x.shape[-2:]
            self._spectra[key] = torch.fft.fft2(torch.fft.irfft2(self._spectrum(x), s=(h, w)))
        return self._spectra[key]

    @staticmethod
    def _filter(x: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=(h, w))

    def _spectrum(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._spectra:
            k = self.kernel.to(device=x.device, dtype=torch.float64)
            self._spectra[key] = kernel_spectrum(k, x.shape[-2], x.shape[-1]).to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
        return self._spectra[key]


def _check_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"blur kernel size must be ≥ 1, got {size}")
