"""Operators as batch data: signatures for grouping and graph keys, row slicing, concatenation, padding.

The engine treats an operator as two parts: its *structure* (type, factors, kernels, mask shape) and
its *per-row data* (only inpainting masks, which may differ per image). Two operators with equal
:func:`operator_signature` differ at most in per-row data, so requests using them can share a batch,
a compiled step and a captured CUDA graph: the graph runs a *static* operator instance whose per-row
data is refreshed in place with :func:`load_rows_` (``copy_``, so captured addresses stay valid).

Operators the engine does not know are compared by identity (the object itself is the signature);
they batch with other rows when ``op.repeat_batch(2) is op`` (no per-image parameters).
"""
from __future__ import annotations

import copy
import hashlib
from typing import Hashable, Sequence

import torch

from pgdm.operators import JPEG, Blur, Colorize, Compose, Identity, Inpaint, LowDynamicRange, Operator, Quantize, SuperResolution

__all__ = [
    "operator_signature",
    "is_row_independent",
    "concat_operators",
    "slice_operator",
    "pad_operator",
    "static_operator",
    "load_rows_",
    "warm_operator_",
]

# Types whose behaviour is fully given by their plain attributes and buffer contents.
_BY_CONTENT = (Identity, SuperResolution, Blur, Colorize, JPEG, Quantize, LowDynamicRange)
_PLAIN = (int, float, str, bool, type(None))


def _digest(t: torch.Tensor) -> str:
    """Content hash of a tensor (a host copy: call outside the sampling loop)."""
    data = t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return f"{tuple(t.shape)}:{t.dtype}:{hashlib.sha1(data).hexdigest()}"


def _plain_attrs(op: Operator) -> tuple:
    """Public attributes holding plain values or tuples of them (factors, kernel names, sizes, …)."""
    plain = lambda v: isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))  # noqa: E731
    return tuple(sorted((k, v) for k, v in vars(op).items() if not k.startswith("_") and plain(v)))


def operator_signature(op: Operator) -> Hashable:
    """A hashable key equal for two operators that compute the same maps up to per-row data (masks).

    Host work (hashes buffer contents): call it when scheduling, never inside the sampling loop.
    """
    if isinstance(op, Compose):
        return ("compose",) + tuple(operator_signature(p) for p in op.ops)
    if isinstance(op, Inpaint):
        return ("inpaint", tuple(op.mask.shape[1:]), op.mask.dtype, str(op.mask.device))
    if type(op) in _BY_CONTENT:
        buffers = tuple((n, _digest(b)) for n, b in sorted(op.named_buffers(recurse=False)))
        return (type(op).__qualname__, op.spec, _plain_attrs(op), buffers)
    return ("object", op)


def is_row_independent(op: Operator) -> bool:
    """True when the operator has no per-image parameters (the same map for every row)."""
    if isinstance(op, Compose):
        return all(is_row_independent(p) for p in op.ops)
    if isinstance(op, Inpaint):
        return op.mask.shape[0] == 1
    return op.repeat_batch(2) is op


def _rowwise(op: Operator) -> bool:
    """True for operators whose per-row data the engine can slice, concatenate and pad."""
    if isinstance(op, Compose):
        return all(_rowwise(p) for p in op.ops)
    return isinstance(op, Inpaint) or is_row_independent(op)


def _mask_rows(op: Inpaint, rows: int) -> torch.Tensor:
    """The mask as (rows, C_m, H, W), expanded from a shared (1, …) mask."""
    m = op.mask
    if m.shape[0] not in (1, rows):
        raise ValueError(f"inpaint mask has batch {m.shape[0]}, expected 1 or {rows}")
    return m.expand(rows, *m.shape[1:])


def concat_operators(ops: Sequence[Operator], rows: Sequence[int]) -> Operator | None:
    """One operator for the row-wise concatenation of batches of ``rows[i]`` images using ``ops[i]``.

    All ops must have equal :func:`operator_signature`. Returns None when they cannot be merged
    (an unknown operator with per-image parameters).
    """
    first = ops[0]
    if len(ops) == 1:
        return first
    if not all(_rowwise(op) for op in ops):
        return None
    if isinstance(first, Compose):
        parts = [concat_operators([op.ops[i] for op in ops], rows) for i in range(len(first.ops))]
        return None if any(p is None for p in parts) else Compose(parts)
    if isinstance(first, Inpaint):
        if all(op.mask.shape[0] == 1 for op in ops) and all(torch.equal(op.mask, first.mask) for op in ops[1:]):
            return first
        return Inpaint(torch.cat([_mask_rows(op, r) for op, r in zip(ops, rows)]))
    return first


def slice_operator(op: Operator, rows: int, start: int, stop: int) -> Operator | None:
    """The operator for rows ``start:stop`` of a batch of ``rows`` images (None if it cannot be sliced)."""
    if isinstance(op, Compose):
        parts = [slice_operator(p, rows, start, stop) for p in op.ops]
        return None if any(p is None for p in parts) else Compose(parts)
    if isinstance(op, Inpaint):
        return op if op.mask.shape[0] == 1 else Inpaint(op.mask[start:stop])
    return op if is_row_independent(op) else None


def pad_operator(op: Operator, rows: int, padded: int) -> Operator | None:
    """The operator for a batch of ``rows`` images padded to ``padded`` rows by repeating row 0."""
    if padded == rows:
        return op
    if isinstance(op, Compose):
        parts = [pad_operator(p, rows, padded) for p in op.ops]
        return None if any(p is None for p in parts) else Compose(parts)
    if isinstance(op, Inpaint):
        if op.mask.shape[0] == 1:
            return op
        m = op.mask
        return Inpaint(torch.cat([m, m[:1].expand(padded - rows, *m.shape[1:])]))
    return op if is_row_independent(op) else None


def static_operator(op: Operator, rows: int) -> Operator:
    """The operator instance a compiled step or a graph runs for one key, built once per key.

    Inpainting parts get their own (rows, C_m, H, W) mask that :func:`load_rows_` overwrites for every
    batch. Parts compared by content are snapshotted (deep copy, derived caches included), so a
    caller who later changes its operator in place (``JPEG.update_tables``) never changes what a
    captured graph computes: the changed operator has a new signature, hence a new key. Unknown
    operators are keyed by identity and used as they are.
    """
    if isinstance(op, Compose):
        return Compose([static_operator(p, rows) for p in op.ops])
    if isinstance(op, Inpaint):
        return Inpaint(_mask_rows(op, rows).clone())
    if type(op) in _BY_CONTENT:
        return copy.deepcopy(op)
    return op


def load_rows_(static: Operator, op: Operator, rows: int) -> None:
    """Copy ``op``'s per-row data (a batch of ``rows``) into ``static`` in place; ``static`` came from :func:`static_operator`."""
    if isinstance(static, Compose):
        for s, p in zip(static.ops, op.ops):
            load_rows_(s, p, rows)
    elif isinstance(static, Inpaint):
        static.mask.copy_(_mask_rows(op, rows))


def warm_operator_(op: Operator, x: torch.Tensor, y: torch.Tensor, noisy: bool) -> None:
    """Run h, h† (and the regularised h† when ``noisy``) once eagerly on these shapes and dtypes.

    Operators build size-dependent matrices on first use (SR factors, blur spectra); this makes them
    exist before a step is compiled or captured, so neither tracing nor capture ever allocates them.
    x: (B, C, H, W) like the samples; y: a measurement batch like the plan's.
    """
    with torch.no_grad():
        op.pinv(op(x))
        op.pinv(y)
        if noisy:
            op.regularized_pinv(y, torch.ones(y.shape[0], dtype=y.dtype, device=y.device))
