"""libjpeg-turbo's baseline integer arithmetic, as constants shared by the JPEG kernel and its torch reference.

Everything here reproduces libjpeg (v6b and libjpeg-turbo, which keep the same maths) bit for bit:

* RGB↔YCbCr (jccolor.c / jdcolor.c): 16-bit fixed point, ``FIX(x) = round(x · 2¹⁶)``.
* The accurate integer DCT and IDCT (jfdctint.c / jidctint.c, "ISLOW", the default of Pillow and libjpeg).
  Each 1-D pass is a butterfly of integer adds and multiplications by 13-bit constants followed by one
  rounding shift (``DESCALE``). The butterfly is linear over the integers, so a pass equals
  ``DESCALE(M @ v, n)`` with the integer 8×8 matrix ``M`` obtained by running the butterfly on unit vectors
  (``_islow_matrix``); that is exactly what libjpeg computes, with no approximation.
* The forward DCT output is 8× the orthonormal DCT; quantisation divides by 8·q and rounds half away from
  zero (jcdctmgr.c).
"""
from __future__ import annotations

from typing import Callable

__all__ = [
    "FDCT_MATRIX",
    "IDCT_MATRIX",
    "FDCT_PASS1_SHIFT",
    "FDCT_PASS2_SHIFT",
    "IDCT_PASS1_SHIFT",
    "IDCT_PASS2_SHIFT",
    "RGB_TO_YCC",
    "YCC_OFFSET",
    "YCC_TO_RGB",
    "SCALEBITS",
    "downsample_bias",
    "upsample_bias",
]

_CONST_BITS, _PASS1_BITS = 13, 2
SCALEBITS = 16  # colour conversion fixed point


def _fix(x: float, bits: int) -> int:
    return int(x * (1 << bits) + 0.5)


_C = {name: _fix(v, _CONST_BITS) for name, v in dict(
    c0298=0.298631336, c0390=0.390180644, c0541=0.541196100, c0765=0.765366865, c0899=0.899976223,
    c1175=1.175875602, c1501=1.501321110, c1847=1.847759065, c1961=1.961570560, c2053=2.053119869,
    c2562=2.562915447, c3072=3.072711026,
).items()}


def _odd_part(t4: int, t5: int, t6: int, t7: int) -> tuple[int, int, int, int]:
    """The odd half of both ISLOW butterflies (jfdctint.c / jidctint.c "odd part")."""
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * _C["c1175"]
    t4, t5, t6, t7 = t4 * _C["c0298"], t5 * _C["c2053"], t6 * _C["c3072"], t7 * _C["c1501"]
    z1, z2 = -z1 * _C["c0899"], -z2 * _C["c2562"]
    z3, z4 = -z3 * _C["c1961"] + z5, -z4 * _C["c0390"] + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_1d(d: list[int]) -> list[int]:
    """One jpeg_fdct_islow pass before DESCALE; outputs 0 and 4 are pre-shifted by CONST_BITS so that a single
    DESCALE by the pass's shift reproduces libjpeg's exact left shift for them."""
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * _C["c0541"]
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    return [
        (t10 + t11) << _CONST_BITS, o1, z1 + t13 * _C["c0765"], o3,
        (t10 - t11) << _CONST_BITS, o5, z1 - t12 * _C["c1847"], o7,
    ]


def _idct_1d(d: list[int]) -> list[int]:
    """One jpeg_idct_islow pass before DESCALE (its all-zero-AC shortcuts give the same integers)."""
    z1 = (d[2] + d[6]) * _C["c0541"]
    t2, t3 = z1 - d[6] * _C["c1847"], z1 + d[2] * _C["c0765"]
    t0, t1 = (d[0] + d[4]) << _CONST_BITS, (d[0] - d[4]) << _CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _islow_matrix(butterfly: Callable[[list[int]], list[int]]) -> tuple[tuple[int, ...], ...]:
    """M[out][in] with butterfly(v) == M @ v for every integer vector v."""
    cols = [butterfly([int(i == k) for i in range(8)]) for k in range(8)]
    return tuple(tuple(cols[k][u] for k in range(8)) for u in range(8))


FDCT_MATRIX = _islow_matrix(_fdct_1d)  # [frequency][sample]
IDCT_MATRIX = _islow_matrix(_idct_1d)  # [sample][frequency]
# Rounding shifts of the two passes (rows then columns forward; columns then rows inverse).
FDCT_PASS1_SHIFT = _CONST_BITS - _PASS1_BITS
FDCT_PASS2_SHIFT = _CONST_BITS + _PASS1_BITS
IDCT_PASS1_SHIFT = _CONST_BITS - _PASS1_BITS
IDCT_PASS2_SHIFT = _CONST_BITS + _PASS1_BITS + 3

# jccolor.c: Y, Cb, Cr = (row · (R, G, B) + offset) >> 16.
RGB_TO_YCC = tuple(
    tuple(_fix(v, SCALEBITS) if v >= 0 else -_fix(-v, SCALEBITS) for v in row)
    for row in ((0.29900, 0.58700, 0.11400), (-0.16874, -0.33126, 0.50000), (0.50000, -0.41869, -0.08131))
)
YCC_OFFSET = (1 << (SCALEBITS - 1), (128 << SCALEBITS) + (1 << (SCALEBITS - 1)) - 1, (128 << SCALEBITS) + (1 << (SCALEBITS - 1)) - 1)
# jdcolor.c: R = Y + (Cr_r·cr + ½) >> 16, B = Y + (Cb_b·cb + ½) >> 16, G = Y + (Cb_g·cb + Cr_g·cr + ½) >> 16,
# with cb, cr centred on 128. Stored as (Cr_r, Cb_b, Cb_g, Cr_g).
YCC_TO_RGB = (_fix(1.40200, SCALEBITS), _fix(1.77200, SCALEBITS), -_fix(0.34414, SCALEBITS), -_fix(0.71414, SCALEBITS))


def downsample_bias(fv: int, fh: int, col_odd: int) -> int:
    """Rounding bias of libjpeg's fv×fh chroma average ``(sum + bias) >> log2(fv·fh)`` (jcsample.c):
    h2v2 alternates 1, 2 along a row; h2v1 alternates 0, 1; h1v2 (int_downsample) uses 1; full size 0."""
    if fh == 2:
        return (1 if fv == 2 else 0) + col_odd
    return 1 if fv == 2 else 0


def upsample_bias(fv: int, fh: int, row_odd: int, col_odd: int) -> int:
    """Rounding bias of libjpeg's "fancy" triangular upsampling (jdsample.c), whose unnormalised sums weigh
    4 per upsampled axis: h2v2 ``(s + 8 - col_odd) >> 4``, h2v1 ``(s + 1 + col_odd) >> 2``,
    h1v2 ``(s + 1 + row_odd) >> 2``."""
    if fv == 2 and fh == 2:
        return 8 - col_odd
    if fh == 2:
        return 1 + col_odd
    if fv == 2:
        return 1 + row_odd
    return 0
