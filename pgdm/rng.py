"""Counter-based Gaussian noise: a pure function of (per-image key, step counter, element index).

Noise for image i at step s depends only on that image's key and s, never on the batch it is in,
the device, or how often the generator was called before — so a restore is batch-invariant and the
draw is made of plain integer tensor ops that ``torch.compile`` traces and CUDA graphs capture
(the step counter is a device tensor updated in place). Bits come from Wellons' ``lowbias32``
integer hash applied in int64 arithmetic that never overflows; Gaussians from Box–Muller.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["stream_keys", "gaussian_no_sync"]

_MASK32 = 0xFFFFFFFF
_CHUNK = 1 << 18  # elements per row drawn at once: bounds the int64 hash temporaries at 2 MiB per row, whatever the image size


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2³² for x in [0, 2³²) held in int64, split so no product exceeds 2⁴⁹."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a 32-bit integer hash with good avalanche. x: int64 in [0, 2³²)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stream_keys(seeds: Sequence[int], sample_index: int = 0) -> torch.Tensor:
    """(B,) int64 keys in [0, 2³²), one per image, from 64-bit seeds and a posterior-sample index."""
    s = torch.tensor([int(v) & ((1 << 63) - 1) for v in seeds], dtype=torch.int64)
    key = _hash32(s & _MASK32) ^ _hash32((s >> 32) ^ 0x9E3779B9)
    return _hash32(key ^ _hash32(torch.full_like(s, sample_index & _MASK32)))


def gaussian_no_sync(
    keys: torch.Tensor, counter: torch.Tensor | int, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """i.i.d. N(0, 1) noise of shape (B, *shape), a pure function of ``keys`` (B,) and ``counter``.

    keys: (B,) int64 from :func:`stream_keys`, on the target device. counter: int or 0-d int64 tensor
    (the step index; use distinct counters for distinct draws).
    """
    device = keys.device
    if not isinstance(counter, torch.Tensor):  # a fill kernel, not a host-to-device copy
        counter = torch.full((), counter, dtype=torch.int64, device=device)
    step_key = _hash32(keys[:, None] ^ _hash32((counter & _MASK32) ^ 0x5BD1E995))  # (B, 1)
    n = math.prod(shape)
    z = torch.empty(keys.shape[0], n, dtype=torch.float32, device=device)
    for start in range(0, n, _CHUNK):  # static bounds: the same unrolled ops for every draw of this shape
        stop = min(start + _CHUNK, n)
        z[:, start:stop] = _box_muller(step_key, start, stop, n)
    return z.view(keys.shape[0], *shape).to(dtype)


def _box_muller(step_key: torch.Tensor, start: int, stop: int, n: int) -> torch.Tensor:
    """Elements [start, stop) of a draw of n per row: element i takes its uniforms from the hashes of counters
    i and n + i. step_key: (B, 1) int64 → (B, stop − start) float32."""
    idx = torch.arange(start, stop, dtype=torch.int64, device=step_key.device)[None, :]
    u1 = ((_hash32((step_key + _hash32(idx)) & _MASK32) >> 8) + 1).to(torch.float32) * 2.0**-24  # (0, 1]
    u2 = (_hash32((step_key + _hash32(idx + n)) & _MASK32) >> 8).to(torch.float32) * 2.0**-24  # [0, 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
