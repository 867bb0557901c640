"""``triton`` and ``triton.language`` when installed; otherwise a stand-in that leaves ``@triton.jit``
functions as plain, never-called Python so the torch references (and the operators) still import."""
from __future__ import annotations

import types

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # CPU-only installs: torch wheels without the triton extra
    HAVE_TRITON = False
    triton = types.SimpleNamespace(jit=lambda fn: fn, cdiv=lambda a, b: -(-a // b))
    tl = types.SimpleNamespace(constexpr=int)

__all__ = ["triton", "tl", "HAVE_TRITON", "require_triton"]


def require_triton(what: str) -> None:
    """Raise a one-line error when a Triton launcher is called without Triton installed."""
    if not HAVE_TRITON:
        raise RuntimeError(f"{what} needs Triton (pip install 'pgdm[triton]'); set PGDM_KERNELS=reference to use torch")
