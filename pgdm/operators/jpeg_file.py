"""Reading a real .jpg for ``JPEG.from_file``: header checks with one-line errors, then its quantised DCT
coefficients and quantisation tables through ``jpeglib`` (libjpeg's ``jpeg_read_coefficients``)."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..io import MAX_PIXELS

__all__ = ["JpegFileData", "read_jpeg_coefficients", "jpeg_frame_shape", "MAX_JPEG_PIXELS"]

# Frames larger than this are refused from their header, before libjpeg allocates anything (Pillow's bomb limit).
MAX_JPEG_PIXELS = MAX_PIXELS  # the one limit of pgdm.io, checked here from the frame header

# Start-of-frame markers libjpeg's coefficient reader handles here: baseline, extended and progressive Huffman.
_SOF_SUPPORTED = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_SOF_REJECTED = {
    0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive", 0xC7: "hierarchical lossless",
    0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded hierarchical", 0xCE: "arithmetic-coded hierarchical progressive",
    0xCF: "arithmetic-coded hierarchical lossless",
}
_SOS = 0xDA


@dataclass
class JpegFileData:
    """What ``JPEG.from_file`` needs from a file.

    coefficients: one (nbh_c, nbw_c, 8, 8) int array per component (block row, block column, u, v);
    qtables: (C, 8, 8) per-component tables; chroma: (fv, fh) chroma averaging; size: (H, W).
    """

    coefficients: list[np.ndarray]
    qtables: np.ndarray
    chroma: tuple[int, int]
    size: tuple[int, int]


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _frame_header(path: str, data: bytes) -> tuple[int, int, int, int, list[tuple[int, int]], int]:
    """(marker, precision, H, W, [(h_samp, v_samp)] per component, offset of the first SOS)."""
    if data[:2] != b"\xff\xd8":
        raise _fail(path, "not a JPEG file (no SOI marker)")
    pos, frame = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise _fail(path, f"corrupt JPEG header (expected a marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if len(segment) != length - 2:
            raise _fail(path, "truncated JPEG header")
        if marker in _SOF_REJECTED:
            raise _fail(path, f"{_SOF_REJECTED[marker]} JPEG is not supported (only Huffman-coded baseline/extended/progressive)")
        if marker in _SOF_SUPPORTED:
            precision, height, width, n = struct.unpack(">BHHB", segment[:6])
            sampling = [(segment[6 + 3 * k + 1] >> 4, segment[6 + 3 * k + 1] & 15) for k in range(n)]
            frame = (marker, precision, height, width, sampling)
        if marker == _SOS:
            if frame is None:
                raise _fail(path, "corrupt JPEG (scan before frame header)")
            return (*frame, pos)
        pos += 2 + length
    raise _fail(path, "truncated JPEG (no image data)")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror})") from None


def _checked_frame(path: str, data: bytes) -> tuple[int, int, int, list[tuple[int, int]], int]:
    """The frame header, with the claimed size checked against :data:`MAX_JPEG_PIXELS` and the format's limits."""
    _, precision, height, width, sampling, sos = _frame_header(path, data)
    if height == 0 or width == 0:
        raise _fail(path, f"JPEG frame header gives a {height}×{width} image (DNL-defined heights are not supported)")
    if height * width > MAX_JPEG_PIXELS:
        raise _fail(path, f"JPEG frame header claims {height}×{width} = {height * width} pixels, over the limit of {MAX_JPEG_PIXELS}")
    return precision, height, width, sampling, sos


def jpeg_frame_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(C, H, W) of a JPEG file from its frame header alone (no decoding); ValueError naming the file otherwise."""
    path = os.fspath(path)
    _, height, width, sampling, _ = _checked_frame(path, _read(path))
    return len(sampling), height, width


def read_jpeg_coefficients(path: str | os.PathLike) -> JpegFileData:
    """Read and validate ``path``; raise ``ValueError("<file>: <problem>")`` for what the operator cannot model.

    The frame header is checked (size limit included) before libjpeg decodes anything."""
    path = os.fspath(path)
    data = _read(path)
    precision, height, width, sampling, sos = _checked_frame(path, data)
    if precision != 8:
        raise _fail(path, f"{precision}-bit JPEG is not supported (8-bit samples only)")
    if len(sampling) not in (1, 3):
        kind = "CMYK/YCCK" if len(sampling) == 4 else f"{len(sampling)}-component"
        raise _fail(path, f"{kind} JPEG is not supported (grayscale or YCbCr only)")
    if data.rfind(b"\xff\xd9") < sos:
        raise _fail(path, "truncated JPEG (no EOI marker after the image data)")
    chroma = (1, 1)
    if len(sampling) == 3:
        (lh, lv), cb, cr = sampling
        ratio = (lv // cb[1], lh // cb[0]) if cb == cr and cb[0] and cb[1] else None
        if ratio not in ((1, 1), (1, 2), (2, 2)) or lv % cb[1] or lh % cb[0]:
            factors = ", ".join(f"{h}x{v}" for h, v in sampling)
            raise _fail(path, f"chroma subsampling with sampling factors {factors} is not supported (4:4:4, 4:2:2, 4:2:0 only)")
        chroma = ratio
    try:
        import jpeglib
    except ImportError:
        raise RuntimeError("JPEG.from_file needs jpeglib (pip install 'pgdm[jpeg]')") from None
    try:
        jpeg = jpeglib.read_dct(path)
        components = [jpeg.Y] + ([jpeg.Cb, jpeg.Cr] if len(sampling) == 3 else [])
        if len(sampling) == 3 and "RGB" in str(jpeg.jpeg_color_space):
            raise _fail(path, "JPEG stores RGB rather than YCbCr (Adobe transform 0); not supported")
        tables = np.stack([jpeg.qt[jpeg.quant_tbl_no[c]] for c in range(len(components))])
    except ValueError:
        raise
    except Exception as e:  # libjpeg errors surface as OSError/RuntimeError from jpeglib
        raise _fail(path, f"libjpeg could not decode the file (corrupt data?): {e}") from None
    if tables.min() < 1 or tables.max() > 255:
        raise _fail(path, f"quantisation tables must be 1..255 (8-bit), found {int(tables.min())}..{int(tables.max())}")
    return JpegFileData([np.asarray(c) for c in components], tables, chroma, (height, width))
