"""Measurement operator interface: h, h† and, for linear operators, Hᵀ and Hᵀ(HHᵀ + λI)⁻¹.

Images are (B, C, H, W) floats in [-1, 1]; a measurement y has whatever batch-first shape the
operator produces. Operators are ``nn.Module``s whose parameters are buffers, so ``.to(device)``
and ``state_dict`` work, and updates ``copy_`` into them so captured CUDA graphs stay valid.
"""
from __future__ import annotations

import abc
import copy
import hashlib
from typing import Hashable, Sequence

import torch
from torch import nn

from .. import validate
from .formats import IMAGE, MeasurementFormat

__all__ = ["Operator", "LinearOperator", "as_batch_lam"]

_PLAIN = (int, float, str, bool, type(None))


class Operator(nn.Module, abc.ABC):
    """A measurement function h with a pseudo-inverse h† such that h(h†(h(x))) = h(x) (Sec. 3.2).

    Subclasses implement ``forward`` (h) and ``pinv`` (h†), and may override ``check_input``.
    ``linear`` tells the sampler whether the noisy guidance of Eq. 7 applies.

    Batch semantics (what lets requests share a batch, a compiled step and a captured graph): an
    operator is its *structure* plus *per-row data*, the buffers named in ``per_row_buffers`` whose
    leading dimension is 1 (shared by every row) or the batch (one entry per image). Two operators
    with equal :meth:`signature` differ at most in per-row data. ``keyed_by_content`` operators are
    fully described by their plain attributes and buffers; others are keyed by identity and batch
    with other rows only when they have no per-image parameters (``repeat_batch(2) is self``).
    """

    linear: bool = False
    decomposable: bool = False  # exposes its SVD H = U diag(s) Vᵀ (V_adjoint, V, U_adjoint, singular_values)
    keyed_by_content: bool = False
    per_row_buffers: tuple[str, ...] = ()
    family: str = "other"  # the task family methods key their per-task settings on: "inpainting", "super-resolution", …
    measurement_format: MeasurementFormat = IMAGE  # the files a measurement is stored as (:mod:`pgdm.operators.formats`)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h(x). x: (B, C, H, W) in [-1, 1]."""

    @abc.abstractmethod
    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """h†(y): an image (B, C, H, W) with h(h†(y)) = y for every y in the range of h."""

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """h†(h(x)), the map ΠGDM applies to x̂ every step; operators with a fused path override it."""
        return self.pinv(self(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line ValueError if x: (B, C, H, W) is not a valid input for this operator."""
        if x.ndim != 4:
            raise ValueError(f"{self.spec}: expected an image batch of shape (B, C, H, W), got {tuple(x.shape)}")

    def check_measurement(self, y: torch.Tensor) -> None:
        """Raise a one-line ValueError if y is not a measurement this operator can produce."""
        if y.ndim != 4:
            raise ValueError(f"{self.spec}: expected a measurement of shape (B, C, H, W), got {tuple(y.shape)}")

    # ------------------------------------------------------------------ measurements as files and pictures

    @property
    def last(self) -> "Operator":
        """The operator applied last (the one whose output is the measurement): ``self`` except in a chain."""
        return self

    def parts(self) -> list["Operator"]:
        """The operators applied in order: ``[self]``, or a chain's parts."""
        return [self]

    def with_last(self, last: "Operator") -> "Operator":
        """This operator with the one applied last replaced by ``last``."""
        return last

    def with_mask(self, mask: torch.Tensor) -> "Operator":
        """This operator with its inpainting mask (1 = observed) replaced; a one-line error for operators without one."""
        raise ValueError(f"the task {self.spec} does not end in inpainting, so it takes no mask")

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """y read back from a file, projected onto the range of h: h(h†(y)), which undoes 8-bit rounding
        and re-applies a mask. y: (B, …) like ``self(x)``."""
        return self(self.pinv(y))

    def measurement_view(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement as a picture (B, C, h, w) in [-1, 1]: y itself when it is an image."""
        return y

    def row_count(self) -> int:
        """The rows of per-image data this operator holds: B for a (B, …) mask, 1 when every row shares it."""
        return max((getattr(self, n).shape[0] for n in self.per_row_buffers), default=1)

    def fingerprint(self) -> str:
        """A content hash of the maps this operator computes (signature plus per-row data, e.g. inpainting
        masks), stable across processes; "" for operators known only by identity. Host work."""
        if not self.keyed_by_content:
            return ""
        rows = b"".join(b.detach().to("cpu", torch.float32).contiguous().numpy().tobytes() for _, b in self._row_buffers())
        return hashlib.sha1(repr(self.signature()).encode() + rows).hexdigest()

    def repeat_batch(self, k: int) -> "Operator":
        """The operator for a batch made of k stacked copies of the original batch (``torch.cat([x] * k)``).

        Operators with per-image parameters (a (B, …) mask, per-image tables) tile them; others return self.
        """
        return self

    # ------------------------------------------------------------------ batch semantics

    def signature(self) -> Hashable:
        """A hashable key equal for two operators that compute the same maps up to per-row data.

        Host work (hashes buffer contents): call it when scheduling, never inside the sampling loop.
        """
        if not self.keyed_by_content:
            return ("object", self)
        rows = tuple((n, tuple(b.shape[1:]), b.dtype, str(b.device)) for n, b in self._row_buffers())
        shared = tuple((n, _digest(b)) for n, b in sorted(self.named_buffers(recurse=False)) if n not in self.per_row_buffers)
        return (type(self).__qualname__, self.spec, _plain_attrs(self), shared, rows)

    def is_row_independent(self) -> bool:
        """True when the operator has no per-image parameters (the same map for every row)."""
        if self.per_row_buffers:
            return all(b.shape[0] == 1 for _, b in self._row_buffers())
        return self.repeat_batch(2) is self

    def slice_rows(self, rows: int, start: int, stop: int) -> "Operator | None":
        """The operator for rows ``start:stop`` of a batch of ``rows`` images (None if it cannot be sliced)."""
        return self._map_rows(lambda b: b.expand(rows, *b.shape[1:])[start:stop])

    def pad_rows(self, rows: int, padded: int) -> "Operator | None":
        """The operator for a batch of ``rows`` images padded to ``padded`` rows by repeating row 0."""
        if padded == rows:
            return self
        return self._map_rows(lambda b: torch.cat([b.expand(rows, *b.shape[1:]), b[:1].expand(padded - rows, *b.shape[1:])]))

    def concat_rows(self, others: Sequence["Operator"], rows: Sequence[int]) -> "Operator | None":
        """One operator for the row-wise concatenation of batches of ``rows[i]`` images using ``[self, *others][i]``.

        All must have equal :meth:`signature`. None when they cannot be merged (per-image parameters
        the operator does not declare as per-row buffers).
        """
        ops = [self, *others]
        if len(ops) == 1:
            return self
        if not self.per_row_buffers:
            return self if all(op.is_row_independent() for op in ops) else None
        if all(op.is_row_independent() for op in ops) and all(
            torch.equal(a, b) for op in others for (_, a), (_, b) in zip(self._row_buffers(), op._row_buffers())
        ):
            return self
        merged = {
            n: torch.cat([dict(op._row_buffers())[n].expand(r, *b.shape[1:]) for op, r in zip(ops, rows)]) for n, b in self._row_buffers()
        }
        return self._with_buffers(merged)

    def static_copy(self, rows: int) -> "Operator":
        """The instance a compiled step or a captured graph runs for one key: per-row buffers of ``rows`` rows
        (refreshed by :meth:`load_rows_`), everything else snapshotted, so a caller who later changes its
        operator in place never changes what a captured graph computes. Identity-keyed operators are used as they are."""
        if not self.keyed_by_content:
            return self
        snapshot = copy.deepcopy(self)
        if not self.per_row_buffers:
            return snapshot
        return snapshot._with_buffers({n: b.expand(rows, *b.shape[1:]).clone() for n, b in snapshot._row_buffers()})

    def load_rows_(self, source: "Operator", rows: int) -> None:
        """Copy ``source``'s per-row data (a batch of ``rows``) into this static copy in place."""
        for (_, dst), (_, src) in zip(self._row_buffers(), source._row_buffers()):
            dst.copy_(src.expand(rows, *src.shape[1:]))

    def warm_(self, x: torch.Tensor, y: torch.Tensor, noisy: bool) -> None:
        """Run h, h† (and, for linear operators, Hᵀ and the regularised h† when ``noisy``) once eagerly on
        these shapes and dtypes, so size-dependent matrices (SR factors, blur spectra) exist before a step is
        compiled or captured. x: (B, C, H, W) like the samples; y: a measurement batch like the plan's."""
        with torch.no_grad():
            self.pinv(self(x))
            self.pinv(y)
            if self.linear:
                self.adjoint(y)
                if noisy:
                    self.regularized_pinv(y, torch.ones(y.shape[0], dtype=y.dtype, device=y.device))
            if self.decomposable:
                self.V(self.V_adjoint(x))
                self.U_adjoint(y)
                self.singular_values(x)

    def _row_buffers(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, getattr(self, n)) for n in self.per_row_buffers]

    def _map_rows(self, fn) -> "Operator | None":
        if not self.per_row_buffers:
            return self if self.is_row_independent() else None
        if self.is_row_independent():
            return self
        return self._with_buffers({n: fn(b) for n, b in self._row_buffers()})

    def _with_buffers(self, buffers: dict[str, torch.Tensor]) -> "Operator":
        """A shallow copy of this operator with the given per-row buffers replaced."""
        new = copy.copy(self)
        new._buffers = dict(self._buffers)
        for n, b in buffers.items():
            new._buffers[n] = b
        return new

    @property
    def spec(self) -> str:
        """The spec string (``pgdm.ops.parse`` syntax) that rebuilds this operator, or its class name."""
        return type(self).__name__

    def extra_repr(self) -> str:
        return self.spec

    def __mul__(self, other: "Operator") -> "Operator":
        """``a * b`` is composition: apply b, then a."""
        from .compose import Compose

        if not isinstance(other, Operator):
            return NotImplemented
        return Compose([other, self])


def _digest(t: torch.Tensor) -> str:
    """Content hash of a tensor (a host copy: call outside the sampling loop)."""
    data = t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return f"{tuple(t.shape)}:{t.dtype}:{hashlib.sha1(data).hexdigest()}"


def _plain_attrs(op: Operator) -> tuple:
    """Public attributes holding plain values or tuples of them (factors, kernel names, sizes, …)."""
    plain = lambda v: isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))  # noqa: E731
    return tuple(sorted((k, v) for k, v in vars(op).items() if not k.startswith("_") and plain(v)))


class LinearOperator(Operator):
    """A linear measurement y = Hx with adjoint Hᵀ and a regularised pseudo-inverse.

    ``regularized_pinv(v, lam)`` = Hᵀ(HHᵀ + λI)⁻¹ v, the matrix of the noisy ΠGDM guidance (Eq. 7, with
    λ = σ_y²/r_t²); at λ = 0 it equals H†. The default solves (HHᵀ + λI)z = v by conjugate gradient
    with a fixed iteration count (no host syncs); operators with structure override it in closed form.
    """

    linear = True
    cg_iters: int = 64

    @abc.abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Hᵀy: (B, C, H, W)."""

    # SVD H = U diag(s) Vᵀ for ``decomposable`` operators (deepinv's DecomposablePhysics), in closed form:
    # z = V_adjoint(x) lives in a "spectral" shape (real or complex); V has orthonormal columns, so
    # V_adjoint(V(z)) = z and x − V(V_adjoint(x)) is x's part in the null space of H; y = U(s ⊙ V_adjoint(x)).

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """Vᵀx: (B, C, H, W) → the spectral shape."""
        raise NotImplementedError(f"{self.spec} does not expose an SVD")

    def V(self, z: torch.Tensor) -> torch.Tensor:
        """Vz: the spectral shape → (B, C, H, W)."""
        raise NotImplementedError(f"{self.spec} does not expose an SVD")

    def U_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Uᵀy: a measurement → the spectral shape."""
        raise NotImplementedError(f"{self.spec} does not expose an SVD")

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        """s ≥ 0, broadcasting against V_adjoint(x) (zeros where H has no singular value)."""
        raise NotImplementedError(f"{self.spec} does not expose an SVD")

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        lam = as_batch_lam(lam, v)
        z = conjugate_gradient_no_sync(lambda u: self(self.adjoint(u)) + lam * u, v, self.cg_iters)
        return self.adjoint(z)


def as_batch_lam(lam: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """λ as a tensor broadcasting over a batch like ``like``: a float, or a (B,) per-image tensor → (B, 1, …).

    A float λ is checked (finite, ≥ 0: a one-line ValueError otherwise); a tensor λ is not, since checking its
    values would sync with the device inside the sampling step: the sampler's σ_y²/r_t² is ≥ 0 by construction,
    σ_y being checked on the host when the run is planned.
    """
    if isinstance(lam, torch.Tensor):
        lam = lam.to(dtype=like.dtype, device=like.device)
    else:  # a fill kernel, not a host-to-device copy: no sync inside a captured step
        lam = torch.full((), validate.non_negative_real("lam", lam), dtype=like.dtype, device=like.device)
    if lam.ndim == 1:
        if lam.shape[0] != like.shape[0]:
            raise ValueError(f"per-image lam must have shape ({like.shape[0]},), got {tuple(lam.shape)}")
        lam = lam.view(-1, *([1] * (like.ndim - 1)))
    elif lam.ndim != 0:
        raise ValueError(f"lam must be a float or a (B,) tensor, got shape {tuple(lam.shape)}")
    return lam


def conjugate_gradient_no_sync(apply_A, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Solve A z = b per batch element (A symmetric PSD, b in its range) with a fixed number of CG steps.

    b: (B, …). Each batch element keeps its own step sizes; steps whose denominators vanish (converged)
    are zeroed with ``torch.where`` rather than a host-side branch.
    """
    dims = tuple(range(1, b.ndim))
    dot = lambda u, w: (u * w).sum(dim=dims, keepdim=True)  # noqa: E731
    z = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = dot(r, r)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iters):
        Ap = apply_A(p)
        pAp = dot(p, Ap)
        alpha = torch.where(pAp > tiny, rr / pAp.clamp_min(tiny), torch.zeros_like(rr))
        z = z + alpha * p
        r = r - alpha * Ap
        rr_new = dot(r, r)
        beta = torch.where(rr > tiny, rr_new / rr.clamp_min(tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return z
