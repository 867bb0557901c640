"""The Triton kernel of ``jpeg_codec`` (conventions in its docstring): one program per 32×32 pixel tile runs
libjpeg's integer pipeline for encode, decode or the fused round trip. Imported on the first Triton call."""
from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from ._triton import require_triton, tl, triton
from .jpeg_codec import _COEF_LIMIT, _INV_SCALE, _Y_LIMIT, TILE, padded_size
from .libjpeg_math import (
    FDCT_PASS1_SHIFT,
    FDCT_PASS2_SHIFT,
    IDCT_PASS1_SHIFT,
    IDCT_PASS2_SHIFT,
    RGB_TO_YCC,
    SCALEBITS,
    YCC_OFFSET,
    YCC_TO_RGB,
)

__all__ = ["jpeg_encode_op", "jpeg_decode_op", "jpeg_roundtrip_op"]

# ---------------------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------------------

# libjpeg constants as compile-time globals of the kernel
_FDCT_P1, _FDCT_P2 = tl.constexpr(FDCT_PASS1_SHIFT), tl.constexpr(FDCT_PASS2_SHIFT)
_IDCT_P1, _IDCT_P2 = tl.constexpr(IDCT_PASS1_SHIFT), tl.constexpr(IDCT_PASS2_SHIFT)
_SCALE = tl.constexpr(SCALEBITS)
(_Y_R, _Y_G, _Y_B), (_CB_R, _CB_G, _CB_B), (_CR_R, _CR_G, _CR_B) = [[tl.constexpr(v) for v in row] for row in RGB_TO_YCC]
_Y_OFF, _CB_OFF, _CR_OFF = [tl.constexpr(v) for v in YCC_OFFSET]
_CR_TO_R, _CB_TO_B, _CB_TO_G, _CR_TO_G = [tl.constexpr(v) for v in YCC_TO_RGB]
_HALF = tl.constexpr(1 << (SCALEBITS - 1))
_COEF_LIM = tl.constexpr(_COEF_LIMIT)
_Y_LIM = tl.constexpr(_Y_LIMIT)
_INV_127_5 = tl.constexpr(_INV_SCALE)


@triton.jit
def _descale(v, n: tl.constexpr):
    """libjpeg DESCALE: round-half-up right shift (arithmetic, so negatives floor)."""
    return (v + 2 ** (n - 1)) >> n


@triton.jit
def _load_pixel(ptr):
    """x in [-1, 1] → floor(127.5·x + 128) clamped to 0..255, int32 (float64 keeps it exact)."""
    x = tl.load(ptr).to(tl.float64)
    p = tl.floor(x * 127.5 + 128.0)
    return tl.minimum(tl.maximum(p, 0.0), 255.0).to(tl.int32)


@triton.jit
def _store_pixel(ptr, p, mask):
    """Pixel p (int32, clamped here to 0..255) → (p − 127.5)·fl(1/127.5), stored in ptr's dtype."""
    p = tl.minimum(tl.maximum(p, 0), 255)
    tl.store(ptr, (p.to(tl.float32) - 127.5) * _INV_127_5, mask=mask)


@triton.jit
def _fdct_quantize(s, q, mf):
    """s: (NB, 8, 8) int32 samples 0..255 → quantised coefficients (NB, 8, 8) int32 (jfdctint + jcdctmgr)."""
    d = s - 128
    t = _descale(tl.sum(d[:, :, None, :] * mf[None, None, :, :], axis=3), _FDCT_P1)  # rows → [n, r, v]
    t = _descale(tl.sum(mf[None, :, :, None] * t[:, None, :, :], axis=2), _FDCT_P2)  # columns → [n, u, v]
    k = (tl.abs(t) + 4 * q[None, :, :]) // (8 * q[None, :, :])
    return tl.where(t < 0, -k, k)


@triton.jit
def _dequantize_idct(k, q, mi):
    """k: (NB, 8, 8) int32 coefficients → samples (NB, 8, 8) int32 in 0..255 (jidctint + range limit)."""
    d = tl.minimum(tl.maximum(k * q[None, :, :], -_COEF_LIM), _COEF_LIM)
    t = _descale(tl.sum(mi[None, :, :, None] * d[:, None, :, :], axis=2), _IDCT_P1)  # columns → [n, r, v]
    o = tl.sum(t.to(tl.int64)[:, :, None, :] * mi.to(tl.int64)[None, None, :, :], axis=3)  # rows, int64
    return tl.minimum(tl.maximum(_descale(o, _IDCT_P2) + 128, 0), 255).to(tl.int32)


@triton.jit
def _load_coefficients(ptr, mask):
    """y entries rounded half up and clamped to ±32767, int32; 0 where masked."""
    v = tl.floor(tl.load(ptr, mask=mask, other=0.0).to(tl.float32) + 0.5)
    return tl.minimum(tl.maximum(v, -_Y_LIM), _Y_LIM).to(tl.int32)


@triton.jit
def _fancy_upsample(plane, near, far_v, far_h, far_vh, a, b, FV: tl.constexpr, FH: tl.constexpr):
    """libjpeg's triangular upsampling (jdsample.c) of one decoded chroma plane, minus 128: 3/4 nearer,
    1/4 farther sample per upsampled axis, one rounding at the end with libjpeg's biases."""
    s = tl.load(plane + near).to(tl.int32)
    if FV == 2:
        s = 3 * s + tl.load(plane + far_v).to(tl.int32)
    if FH == 2:
        far = tl.load(plane + far_h).to(tl.int32)
        if FV == 2:
            far = 3 * far + tl.load(plane + far_vh).to(tl.int32)
        s = 3 * s + far
    if FV == 2 and FH == 2:
        s = (s + 8 - b) >> 4
    elif FH == 2:
        s = (s + 1 + b) >> 2
    elif FV == 2:
        s = (s + 1 + a) >> 2
    return s - 128


@triton.jit
def _jpeg_codec_kernel(
    src_ptr, dst_ptr, scratch_ptr, qt_ptr, mf_ptr, mi_ptr,
    H, W, HP, WP,          # image size; y size (whole MCUs)
    HC, WC,                # chroma plane size ⌈H/FV⌉ × ⌈W/FH⌉
    NBH, NBW, NBHC, NBWC,  # valid luma / chroma blocks
    s_sb, s_sc, s_sh, s_db, s_dc, s_dh,  # batch, channel, row strides of src and dst (columns contiguous)
    C: tl.constexpr,             # 3: RGB image, YCbCr coefficients; 1: grayscale
    FV: tl.constexpr, FH: tl.constexpr,  # chroma averaging factors (1 or 2)
    FROM_PIXELS: tl.constexpr,   # src is an image (encode, round trip), else coefficients (decode)
    TO_PIXELS: tl.constexpr,     # dst is an image (decode, round trip), else coefficients (encode)
):
    # One program = one 32×32-pixel tile of one image: 4×4 luma blocks, plus the chroma blocks under it and,
    # when upsampling, a one-block halo (so 4×4 chroma blocks for every factor) recomputed here instead of
    # read from a neighbouring program.
    pid_c, pid_r, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    u = tl.arange(0, 8)
    mat = u[:, None] * 8 + u[None, :]
    mf = tl.load(mf_ptr + mat)
    mi = tl.load(mi_ptr + mat)
    src = src_ptr + pid_b.to(tl.int64) * s_sb
    dst = dst_ptr + pid_b.to(tl.int64) * s_db
    uu = u[None, :, None]
    vv = u[None, None, :]
    scratch = scratch_ptr + ((pid_b * tl.num_programs(1) + pid_r) * tl.num_programs(0) + pid_c).to(tl.int64) * 2048

    if C == 3:
        HALO_V: tl.constexpr = (FV - 1) * TO_PIXELS
        HALO_H: tl.constexpr = (FH - 1) * TO_PIXELS
        NCV: tl.constexpr = 4 // FV + 2 * HALO_V
        NCH: tl.constexpr = 4 // FH + 2 * HALO_H
        cb = tl.arange(0, NCV * NCH)
        gi = (cb // NCH)[:, None, None]  # block position in this program's chroma grid
        gj = (cb % NCH)[:, None, None]
        bi = pid_r * (4 // FV) - HALO_V + gi  # chroma block coordinates in the image
        bj = pid_c * (4 // FH) - HALO_H + gj
        valid = (bi >= 0) & (bi < NBHC) & (bj >= 0) & (bj < NBWC)
        y_off = (FV * 8 * bi + uu) * s_sh + FH * 8 * bj + vv  # coefficient positions in y
        q1 = tl.load(qt_ptr + 64 + mat)
        q2 = tl.load(qt_ptr + 128 + mat)
        if FROM_PIXELS:
            i = tl.minimum(tl.maximum(8 * bi + uu, 0), HC - 1)  # chroma rows replicate at chroma resolution
            j = tl.maximum(8 * bj + vv, 0)                       # columns replicate at full resolution
            sum_cb = tl.zeros((NCV * NCH, 8, 8), tl.int32)
            sum_cr = tl.zeros((NCV * NCH, 8, 8), tl.int32)
            for dv in tl.static_range(FV):
                for dh in tl.static_range(FH):
                    off = tl.minimum(FV * i + dv, H - 1) * s_sh + tl.minimum(FH * j + dh, W - 1)
                    red = _load_pixel(src + off)
                    green = _load_pixel(src + s_sc + off)
                    blue = _load_pixel(src + 2 * s_sc + off)
                    sum_cb += (_CB_R * red + _CB_G * green + _CB_B * blue + _CB_OFF) >> _SCALE
                    sum_cr += (_CR_R * red + _CR_G * green + _CR_B * blue + _CR_OFF) >> _SCALE
            bias = (FV - 1) + (FH - 1) * (j & 1)  # jcsample.c: h2v2 1,2,1,2…; h2v1 0,1,…; h1v2 1
            k_cb = _fdct_quantize((sum_cb + bias) >> ((FV - 1) + (FH - 1)), q1, mf)
            k_cr = _fdct_quantize((sum_cr + bias) >> ((FV - 1) + (FH - 1)), q2, mf)
        else:
            k_cb = _load_coefficients(src + s_sc + y_off, valid)
            k_cr = _load_coefficients(src + 2 * s_sc + y_off, valid)
        if TO_PIXELS:  # decoded chroma of the grid → this program's 2 × 32 × 32 scratch planes
            s_off = (8 * gi + uu) * 32 + 8 * gj + vv
            tl.store(scratch + s_off, _dequantize_idct(k_cb, q1, mi).to(tl.uint8))
            tl.store(scratch + 1024 + s_off, _dequantize_idct(k_cr, q2, mi).to(tl.uint8))
        else:
            d_off = (FV * 8 * bi + uu) * s_dh + FH * 8 * bj + vv
            tl.store(dst + s_dc + d_off, k_cb.to(tl.float32), mask=valid)
            tl.store(dst + 2 * s_dc + d_off, k_cr.to(tl.float32), mask=valid)

    lb = tl.arange(0, 16)
    li = (pid_r * 4 + lb // 4)[:, None, None]
    lj = (pid_c * 4 + lb % 4)[:, None, None]
    r = 8 * li + uu  # pixel coordinates, (16, 8, 8)
    c = 8 * lj + vv
    lvalid = (li < NBH) & (lj < NBW)
    q0 = tl.load(qt_ptr + mat)
    if FROM_PIXELS:
        off = tl.minimum(r, H - 1) * s_sh + tl.minimum(c, W - 1)
        if C == 3:
            red = _load_pixel(src + off)
            green = _load_pixel(src + s_sc + off)
            blue = _load_pixel(src + 2 * s_sc + off)
            luma = (_Y_R * red + _Y_G * green + _Y_B * blue + _Y_OFF) >> _SCALE
        else:
            luma = _load_pixel(src + off)
        k_y = _fdct_quantize(luma, q0, mf)
    else:
        k_y = _load_coefficients(src + r * s_sh + c, lvalid)
    if TO_PIXELS:
        y_dec = _dequantize_idct(k_y, q0, mi)
        inside = (r < H) & (c < W)
        if C == 3:
            tl.debug_barrier()  # the chroma scratch written above is visible to the whole program
            row0 = 8 * (pid_r * (4 // FV) - (FV - 1))  # image chroma coordinates of scratch[0, 0]
            col0 = 8 * (pid_c * (4 // FH) - (FH - 1))
            ci = tl.minimum(r // FV, HC - 1)
            cj = tl.minimum(c // FH, WC - 1)
            a = r % FV
            b = c % FH
            fi = tl.minimum(tl.maximum(ci - 1 + 2 * a, 0), HC - 1) - row0  # farther row / column, replicated at edges
            fj = tl.minimum(tl.maximum(cj - 1 + 2 * b, 0), WC - 1) - col0
            ni = ci - row0
            nj = cj - col0
            cbv = _fancy_upsample(scratch, ni * 32 + nj, fi * 32 + nj, ni * 32 + fj, fi * 32 + fj, a, b, FV, FH)
            crv = _fancy_upsample(scratch + 1024, ni * 32 + nj, fi * 32 + nj, ni * 32 + fj, fi * 32 + fj, a, b, FV, FH)
            out = dst + r * s_dh + c
            _store_pixel(out, y_dec + ((_CR_TO_R * crv + _HALF) >> _SCALE), inside)
            _store_pixel(out + s_dc, y_dec + ((_CB_TO_G * cbv + _CR_TO_G * crv + _HALF) >> _SCALE), inside)
            _store_pixel(out + 2 * s_dc, y_dec + ((_CB_TO_B * cbv + _HALF) >> _SCALE), inside)
        else:
            _store_pixel(dst + r * s_dh + c, y_dec, inside)
    else:
        tl.store(dst + r * s_dh + c, tl.where(lvalid, k_y, 0).to(tl.float32), mask=(r < HP) & (c < WP))


# ---------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------


def _geometry(height: int, width: int, chroma: tuple[int, int]) -> dict[str, int]:
    fv, fh = chroma
    hp, wp = padded_size(height, width, chroma)
    return dict(
        H=height, W=width, HP=hp, WP=wp, HC=-(-height // fv), WC=-(-width // fh),
        NBH=-(-height // 8), NBW=-(-width // 8), NBHC=hp // (8 * fv), NBWC=wp // (8 * fh),
    )




def _launch(src: torch.Tensor, dst: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, chroma: tuple[int, int], height: int, width: int, from_pixels: bool, to_pixels: bool) -> None:
    require_triton("the JPEG kernel")
    channels = src.shape[1]
    geo = _geometry(height, width, chroma)
    grid = (triton.cdiv(geo["WP"], TILE), triton.cdiv(geo["HP"], TILE), src.shape[0])
    scratch_size = 2048 * grid[0] * grid[1] * grid[2] if (to_pixels and channels == 3) else 1
    scratch = torch.empty(scratch_size, dtype=torch.uint8, device=src.device)
    qt = qtables.to(device=src.device, dtype=torch.int32).contiguous()
    dct = dct.to(device=src.device, dtype=torch.int32).contiguous()
    wrap_triton(_jpeg_codec_kernel)[grid](
        src, dst, scratch, qt, dct[0], dct[1], *geo.values(),
        src.stride(0), src.stride(1), src.stride(2), dst.stride(0), dst.stride(1), dst.stride(2),
        C=channels, FV=chroma[0], FH=chroma[1], FROM_PIXELS=from_pixels, TO_PIXELS=to_pixels, num_warps=8,
    )


@triton_op("pgdm::jpeg_encode", mutates_args={})
def jpeg_encode_op(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, fv: int, fh: int) -> torch.Tensor:
    hp, wp = padded_size(x.shape[2], x.shape[3], (fv, fh))
    y = torch.zeros(x.shape[0], x.shape[1], hp, wp, dtype=torch.float32, device=x.device)
    _launch(x.contiguous(), y, qtables, dct, (fv, fh), x.shape[2], x.shape[3], True, False)
    return y


@triton_op("pgdm::jpeg_decode", mutates_args={})
def jpeg_decode_op(y: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, fv: int, fh: int, height: int, width: int) -> torch.Tensor:
    x = torch.empty(y.shape[0], y.shape[1], height, width, dtype=torch.float32, device=y.device)
    _launch(y.contiguous(), x, qtables, dct, (fv, fh), height, width, False, True)
    return x


@triton_op("pgdm::jpeg_roundtrip", mutates_args={})
def jpeg_roundtrip_op(x: torch.Tensor, qtables: torch.Tensor, dct: torch.Tensor, fv: int, fh: int) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _launch(x.contiguous(), out, qtables, dct, (fv, fh), x.shape[2], x.shape[3], True, True)
    return out
