"""Baseline JPEG, bit-exact with libjpeg-turbo: encode (h), decode (h†) and the fused round trip h†(h(x)).

Conventions shared by the Triton kernel and the torch reference:

* x: (B, C, H, W) float in [-1, 1], C = 3 (RGB) or 1 (grayscale). Pixels are ``floor(127.5·x + 128)``
  clamped to 0..255 (round half up of (x + 1)·127.5, computed exactly in float64); decoded pixels p map
  back to ``(p − 127.5) · fl(1/127.5)``, which those pixels reproduce exactly.
* Channel 0 is luma (or gray); channels 1, 2 (Cb, Cr) are averaged over ``chroma = (fv, fh)`` ∈ {1, 2}²
  samples: (2, 2) is 4:2:0, (1, 2) 4:2:2, (1, 1) 4:4:4. The MCU is 8·fv × 8·fh pixels.
* y: (B, C, Hp, Wp) float32 holding integers, Hp × Wp = H × W rounded up to whole MCUs. Channel c has a
  block grid of ⌈H/(8·sv)⌉ × ⌈W/(8·sh)⌉ blocks, (sv, sh) = (1, 1) for luma and ``chroma`` otherwise; the
  quantised DCT coefficient (u, v) (u vertical frequency) of block (i, j) sits at y[b, c, 8·sv·i + u,
  8·sh·j + v]. Every other entry is 0: for 4:2:0 a chroma block fills the top-left 8×8 of its 16×16 cell,
  and luma blocks past ⌈H/8⌉ × ⌈W/8⌉ (libjpeg's dummy blocks) are zero. So one spatial region of y
  belongs to one image region in every channel, and masking y region-wise (e.g. inpainting after JPEG)
  drops whole MCUs coherently.
* qtables: (C, 8, 8) integer-valued quantisation tables in natural (row-major) order, 1..255.
* dct: (2, 8, 8) int32 ISLOW matrices from ``islow_matrices()``, a tensor the caller keeps on the device
  (``JPEG`` holds it as a buffer) so that no call creates device constants: the functions run inside
  captured CUDA graphs and trace under ``torch.compile``.
* Decoding rounds y half up to integers and clamps dequantised coefficients to ±16384 (16× the largest a
  real encoder produces) so arbitrary y stays inside int32 arithmetic.

Every step is libjpeg's integer arithmetic (see ``libjpeg_math``): colour conversion, chroma averaging
with alternating bias, edge replication (rows first to the chroma factor then chroma rows to whole
blocks; columns replicated at full resolution), the ISLOW DCT, rounding quantisation, the ISLOW IDCT with
range limiting, triangular "fancy" upsampling with replicated edges, and YCbCr→RGB. The torch reference
works in float64 holding integers (exact below 2⁵³); the kernel in int32 with the IDCT's second pass in
int64. Both give identical integers, so h, h† and h†∘h agree exactly across backends.
"""
from __future__ import annotations

import torch

from . import dispatch
from .libjpeg_math import (
    FDCT_MATRIX,
    FDCT_PASS1_SHIFT,
    FDCT_PASS2_SHIFT,
    IDCT_MATRIX,
    IDCT_PASS1_SHIFT,
    IDCT_PASS2_SHIFT,
    RGB_TO_YCC,
    SCALEBITS,
    YCC_OFFSET,
    YCC_TO_RGB,
    downsample_bias,
    upsample_bias,
)

__all__ = [
    "islow_matrices",
    "jpeg_encode",
    "jpeg_decode",
    "jpeg_roundtrip",
    "jpeg_encode_reference",
    "jpeg_decode_reference",
    "jpeg_roundtrip_reference",
    "jpeg_encode_triton",
    "jpeg_decode_triton",
    "jpeg_roundtrip_triton",
    "padded_size",
]

TILE = 32  # pixels per program side: 4×4 luma blocks, and 4×4 chroma blocks (halo included) for every factor
_COEF_LIMIT = 16384  # |dequantised coefficient| bound on decode
_Y_LIMIT = 32767.0  # |y| bound before dequantising (keeps k·q inside int32)
_INV_SCALE = 0.007843137718737125  # fl32(1/127.5): pixel p ↦ (p − 127.5)·_INV_SCALE, exactly ±1 at 0 and 255


def padded_size(height: int, width: int, chroma: tuple[int, int]) -> tuple[int, int]:
    """(Hp, Wp): the image size rounded up to whole MCUs of 8·fv × 8·fh pixels."""
    mv, mh = 8 * chroma[0], 8 * chroma[1]
    return -(-height // mv) * mv, -(-width // mh) * mh


def islow_matrices() -> torch.Tensor:
    """(2, 8, 8) int32: libjpeg's forward ([frequency, sample]) and inverse ([sample, frequency]) ISLOW matrices."""
    return torch.tensor([FDCT_MATRIX, IDCT_MATRIX], dtype=torch.int32)


# The Triton kernel lives in ``jpeg_codec_triton``, imported on the first Triton call, so that importing the
# operators loads neither Triton nor torch's Triton-op machinery.


def jpeg_encode_triton(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """h(x) with the Triton kernel; arguments as ``jpeg_encode``."""
    from .jpeg_codec_triton import jpeg_encode_op

    return jpeg_encode_op(x, qtables, dct, *chroma)


def jpeg_decode_triton(y: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """h†(y) with the Triton kernel; arguments as ``jpeg_decode``."""
    from .jpeg_codec_triton import jpeg_decode_op

    return jpeg_decode_op(y, qtables, dct, *chroma, *size)


def jpeg_roundtrip_triton(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """h†(h(x)) in one launch; arguments as ``jpeg_roundtrip``."""
    from .jpeg_codec_triton import jpeg_roundtrip_op

    return jpeg_roundtrip_op(x, qtables, dct, *chroma)

# ---------------------------------------------------------------------------------------------------------
# Torch reference (float64 holding integers)
# ---------------------------------------------------------------------------------------------------------


def _floor_shift(v: torch.Tensor, n: int) -> torch.Tensor:
    """v >> n (floor), exact on float64 integers."""
    return torch.floor(v * 2.0**-n)


def _descale_ref(v: torch.Tensor, n: int) -> torch.Tensor:
    return _floor_shift(v + float(1 << (n - 1)), n)


def _pixels_ref(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x.double() * 127.5 + 128.0).clamp_(0, 255)


def _image_ref(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return ((p.float() - 127.5) * _INV_SCALE).to(dtype)  # the scalar is exactly fl32(1/127.5)


def _rgb_to_ycc_ref(p: torch.Tensor) -> torch.Tensor:
    r, g, b = p.unbind(1)
    rows = [(kr * r + kg * g + kb * b + off) for (kr, kg, kb), off in zip(RGB_TO_YCC, YCC_OFFSET)]
    return _floor_shift(torch.stack(rows, 1), SCALEBITS)


def _ycc_to_rgb_ref(s: torch.Tensor) -> torch.Tensor:
    cr_r, cb_b, cb_g, cr_g = YCC_TO_RGB
    half = float(1 << (SCALEBITS - 1))
    y, cb, cr = s[:, 0], s[:, 1] - 128, s[:, 2] - 128
    rgb = (
        y + _floor_shift(cr_r * cr + half, SCALEBITS),
        y + _floor_shift(cb_g * cb + cr_g * cr + half, SCALEBITS),
        y + _floor_shift(cb_b * cb + half, SCALEBITS),
    )
    return torch.stack(rgb, 1).clamp_(0, 255)


def _replicate(n: int, limit: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device).clamp_(max=limit - 1)


def _component_samples(plane: torch.Tensor, sub: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """(B, H, W) full-resolution samples → (B, 8·nbh, 8·nbw) component samples, padded and averaged as
    libjpeg does (rows: replicate to a multiple of sv, average, replicate chroma rows; columns: replicate at
    full resolution to whole blocks, average)."""
    sv, sh = sub
    nbh, nbw, hc = -(-height // (8 * sv)), -(-width // (8 * sh)), -(-height // sv)
    p = plane[:, _replicate(hc * sv, height, plane.device)][:, :, _replicate(nbw * 8 * sh, width, plane.device)]
    s = p.view(p.shape[0], hc, sv, nbw * 8, sh).sum((2, 4))
    odd = torch.arange(nbw * 8, device=p.device) % 2
    bias = downsample_bias(sv, sh, 0) + (downsample_bias(sv, sh, 1) - downsample_bias(sv, sh, 0)) * odd
    s = _floor_shift(s + bias, (sv - 1) + (sh - 1))
    return s[:, _replicate(nbh * 8, hc, p.device)]


def _fdct_quantize_ref(s: torch.Tensor, q: torch.Tensor, mf: torch.Tensor) -> torch.Tensor:
    """(B, 8·nbh, 8·nbw) samples → quantised coefficients, same layout ([.., 8i + u, 8j + v])."""
    b, h, w = s.shape
    mf = mf.to(torch.float64)
    blocks = (s - 128).view(b, h // 8, 8, w // 8, 8)  # [b, i, r, j, c]
    t = _descale_ref(torch.einsum("birjc,vc->birjv", blocks, mf), FDCT_PASS1_SHIFT)  # rows
    t = _descale_ref(torch.einsum("birjv,ur->biujv", t, mf), FDCT_PASS2_SHIFT)  # columns
    q = q.to(device=s.device, dtype=torch.float64).view(1, 1, 8, 1, 8)
    return (torch.floor((t.abs() + 4 * q) / (8 * q)) * torch.sign(t)).reshape(b, h, w)


def _dequantize_idct_ref(k: torch.Tensor, q: torch.Tensor, mi: torch.Tensor) -> torch.Tensor:
    """Quantised coefficients (B, 8·nbh, 8·nbw) → samples 0..255, same layout."""
    b, h, w = k.shape
    mi = mi.to(torch.float64)
    q = q.to(device=k.device, dtype=torch.float64).view(1, 1, 8, 1, 8)
    d = (k.view(b, h // 8, 8, w // 8, 8) * q).clamp_(-_COEF_LIMIT, _COEF_LIMIT)  # [b, i, u, j, v]
    t = _descale_ref(torch.einsum("biujv,ru->birjv", d, mi), IDCT_PASS1_SHIFT)  # columns
    t = _descale_ref(torch.einsum("birjv,cv->birjc", t, mi), IDCT_PASS2_SHIFT)  # rows
    return (t + 128).clamp_(0, 255).reshape(b, h, w)


def _fancy_upsample_ref(s: torch.Tensor, sub: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Decoded component (B, ≥hc, ≥wc) → (B, H, W): libjpeg's triangular upsampling, replicated edges."""
    sv, sh = sub
    hc, wc = -(-height // sv), -(-width // sh)
    s = s[:, :hc, :wc]
    for dim, f, n in ((1, sv, hc), (2, sh, wc)):
        if f == 2:
            idx = torch.arange(n, device=s.device)
            before = s.index_select(dim, (idx - 1).clamp(min=0))
            after = s.index_select(dim, (idx + 1).clamp(max=n - 1))
            s = torch.stack([3 * s + before, 3 * s + after], dim + 1).flatten(dim, dim + 1)
    odd_r = (torch.arange(s.shape[1], device=s.device) % 2)[:, None]
    odd_c = (torch.arange(s.shape[2], device=s.device) % 2)[None, :]
    base = upsample_bias(sv, sh, 0, 0)
    bias = base + (upsample_bias(sv, sh, 1, 0) - base) * odd_r + (upsample_bias(sv, sh, 0, 1) - base) * odd_c
    s = _floor_shift(s + bias, 2 * ((sv - 1) + (sh - 1)))
    return s[:, :height, :width]


def _subsampling(channel: int, chroma: tuple[int, int]) -> tuple[int, int]:
    return (1, 1) if channel == 0 else chroma


def jpeg_encode_reference(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """h(x) in torch; arguments as ``jpeg_encode``."""
    b, ch, height, width = x.shape
    hp, wp = padded_size(height, width, chroma)
    p = _pixels_ref(x)
    planes = _rgb_to_ycc_ref(p) if ch == 3 else p
    y = torch.zeros(b, ch, hp, wp, dtype=torch.float32, device=x.device)
    for c in range(ch):
        sv, sh = _subsampling(c, chroma)
        k = _fdct_quantize_ref(_component_samples(planes[:, c], (sv, sh), height, width), qtables[c], dct[0])
        nbh, nbw = k.shape[1] // 8, k.shape[2] // 8
        cells = torch.zeros(b, nbh, 8 * sv, nbw, 8 * sh, dtype=torch.float32, device=x.device)
        cells[:, :, :8, :, :8] = k.view(b, nbh, 8, nbw, 8)  # a block in the top-left of its 8sv × 8sh cell
        y[:, c, : 8 * sv * nbh, : 8 * sh * nbw] = cells.view(b, 8 * sv * nbh, 8 * sh * nbw)
    return y


def jpeg_decode_reference(y: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """h†(y) in torch; arguments as ``jpeg_decode``."""
    b, ch = y.shape[:2]
    height, width = size
    k_all = torch.floor(y.float() + 0.5).clamp_(-_Y_LIMIT, _Y_LIMIT).double()
    planes = []
    for c in range(ch):
        sv, sh = _subsampling(c, chroma)
        nbh, nbw = -(-height // (8 * sv)), -(-width // (8 * sh))
        k = k_all[:, c, : 8 * sv * nbh, : 8 * sh * nbw].reshape(b, nbh, 8 * sv, nbw, 8 * sh)[:, :, :8, :, :8]
        s = _dequantize_idct_ref(k.reshape(b, 8 * nbh, 8 * nbw), qtables[c], dct[1])
        planes.append(_fancy_upsample_ref(s, (sv, sh), height, width))
    p = torch.stack(planes, 1)
    return _image_ref(_ycc_to_rgb_ref(p) if ch == 3 else p, torch.float32)


def jpeg_roundtrip_reference(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """h†(h(x)) in torch; arguments as ``jpeg_roundtrip``."""
    y = jpeg_encode_reference(x, qtables, dct, chroma)
    return jpeg_decode_reference(y, qtables, dct, chroma, x.shape[-2:]).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def jpeg_encode(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """Baseline JPEG encoding up to the entropy coder: the quantised DCT coefficients.

    x: (B, C, H, W) float in [-1, 1], C ∈ {1, 3}; qtables: (C, 8, 8) integers 1..255 (natural order);
    dct: ``islow_matrices()`` on x's device; chroma: (fv, fh) ∈ {1, 2}², the averaging of channels 1 and 2.
    Returns y: (B, C, Hp, Wp) float32 integers in the layout of the module docstring.
    """
    return dispatch(jpeg_encode_triton, jpeg_encode_reference, x.device)(x, qtables, dct, chroma)


def jpeg_decode(y: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """libjpeg's default decoder (ISLOW IDCT, fancy upsampling) on coefficients y: (B, C, Hp, Wp).

    size: (H, W) of the image. Returns (B, C, H, W) float32 in [-1, 1], on the 8-bit pixel grid.
    """
    return dispatch(jpeg_decode_triton, jpeg_decode_reference, y.device)(y, qtables, dct, chroma, size)


def jpeg_roundtrip(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int]) -> torch.Tensor:
    """jpeg_decode(jpeg_encode(x)) without materialising y: (B, C, H, W) in x's dtype, in [-1, 1]."""
    return dispatch(jpeg_roundtrip_triton, jpeg_roundtrip_reference, x.device)(x, qtables, dct, chroma)
