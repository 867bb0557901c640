"""Triton kernels, each beside its pure-torch reference, and the one place that picks between them.

``dispatch(triton_fn, reference_fn, device)`` returns the function to run: the Triton launcher for CUDA
tensors, the reference elsewhere. ``PGDM_KERNELS=triton`` or ``PGDM_KERNELS=reference`` forces either
(``triton`` on CPU needs ``TRITON_INTERPRET=1``, the interpreter the kernel tests use). A forced backend
that fails raises; an auto-selected Triton launcher that fails (no Triton, an unsupported GPU) falls back
to the reference quietly and is not tried again.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

import torch

__all__ = ["dispatch", "backend", "is_interpreter", "elementwise_settings"]

F = TypeVar("F", bound=Callable)
_BACKENDS = ("auto", "triton", "reference")
_broken: set[str] = set()


def backend() -> str:
    """The ``PGDM_KERNELS`` setting: ``auto`` (default), ``triton`` or ``reference``."""
    choice = os.environ.get("PGDM_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _BACKENDS:
        raise ValueError(f"PGDM_KERNELS must be one of {', '.join(_BACKENDS)}, got {choice!r}")
    return choice


def is_interpreter() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dispatch(triton_fn: F, reference_fn: F, device: torch.device) -> F:
    """The implementation to call for tensors on ``device`` (see the module docstring)."""
    choice = backend()
    if choice == "reference":
        return reference_fn
    if choice == "triton":
        return triton_fn
    if device.type != "cuda" or triton_fn.__qualname__ in _broken:
        return reference_fn

    def guarded(*args, **kwargs):
        try:
            return triton_fn(*args, **kwargs)
        except Exception:  # auto-selected backend: fall back quietly, per the style guide
            _broken.add(triton_fn.__qualname__)
            return reference_fn(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def elementwise_settings(n: int) -> tuple[int, int]:
    """(BLOCK_SIZE, num_warps) for a 1-D elementwise kernel over n items: 1024-wide blocks with 4 warps
    (8 items per thread), smaller power-of-two blocks for small inputs."""
    block = min(1024, max(128, 1 << max(n - 1, 0).bit_length()))
    return block, max(1, min(4, block // 256))
