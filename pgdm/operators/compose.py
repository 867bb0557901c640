"""Composition of measurement operators: h = h_k ∘ … ∘ h_1."""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import nn

from .base import LinearOperator, Operator

__all__ = ["Compose"]


class Compose(LinearOperator):
    """Apply ``ops[0]`` first, then ``ops[1]``, …: h = h_k ∘ … ∘ h_1.

    h† = h_1† ∘ … ∘ h_k† (the reverse chain of pseudo-inverses, Sec. 5.3), which keeps
    h(h†(h(x))) = h(x) whenever each part does and each part's h† lands in the next part's
    range-consistent inputs. When every part is linear, the chain is linear: Hᵀ runs the parts'
    adjoints in reverse, and ``regularized_pinv`` solves (HHᵀ + λI)z = v by conjugate gradient.

    Example:
        >>> op = Compose([SuperResolution(4), Inpaint.center((1, 3, 16, 16))])  # SR×4, then a hole in the low-res image
    """

    def __init__(self, ops: Sequence[Operator]) -> None:
        super().__init__()
        flat: list[Operator] = []
        for op in ops:
            if not isinstance(op, Operator):
                raise ValueError(f"Compose takes pgdm operators, got {type(op).__name__}")
            flat.extend(op.ops if isinstance(op, Compose) else [op])
        if not flat:
            raise ValueError("Compose needs at least one operator")
        self.ops = nn.ModuleList(flat)

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return all(op.linear for op in self.ops)

    @property
    def spec(self) -> str:
        return "+".join(op.spec for op in self.ops)

    def check_input(self, x: torch.Tensor) -> None:
        self.ops[0].check_input(x)

    def check_measurement(self, y: torch.Tensor) -> None:
        self.ops[-1].check_measurement(y)

    @property
    def last(self) -> Operator:
        return self.ops[-1]

    @property
    def measurement_format(self):  # type: ignore[override]
        return self.ops[-1].measurement_format

    @property
    def family(self) -> str:  # type: ignore[override]
        return "composed"

    def with_last(self, last: Operator) -> "Compose":
        return Compose([*self.ops[:-1], last])

    def with_mask(self, mask: torch.Tensor) -> "Compose":
        return self.with_last(self.ops[-1].with_mask(mask))

    def parts(self) -> list[Operator]:
        return list(self.ops)

    def row_count(self) -> int:
        return max(op.row_count() for op in self.ops)

    def fingerprint(self) -> str:
        parts = [op.fingerprint() for op in self.ops]
        return "" if "" in parts else hashlib.sha1("+".join(parts).encode()).hexdigest()

    def signature(self):
        return ("compose",) + tuple(op.signature() for op in self.ops)

    def is_row_independent(self) -> bool:
        return all(op.is_row_independent() for op in self.ops)

    def slice_rows(self, rows: int, start: int, stop: int) -> "Compose | None":
        return self._rebuild([op.slice_rows(rows, start, stop) for op in self.ops])

    def pad_rows(self, rows: int, padded: int) -> "Compose | None":
        return self._rebuild([op.pad_rows(rows, padded) for op in self.ops])

    def concat_rows(self, others: Sequence[Operator], rows: Sequence[int]) -> "Compose | None":
        if not others:
            return self
        return self._rebuild([op.concat_rows([o.ops[i] for o in others], rows) for i, op in enumerate(self.ops)])

    def static_copy(self, rows: int) -> "Compose":
        return Compose([op.static_copy(rows) for op in self.ops])

    def load_rows_(self, source: Operator, rows: int) -> None:
        for dst, src in zip(self.ops, source.ops):
            dst.load_rows_(src, rows)

    def _rebuild(self, parts: list[Operator | None]) -> "Compose | None":
        if any(p is None for p in parts):
            return None
        return self if all(a is b for a, b in zip(parts, self.ops)) else Compose(parts)

    def repeat_batch(self, k: int) -> "Compose":
        parts = [op.repeat_batch(k) for op in self.ops]
        return self if all(a is b for a, b in zip(parts, self.ops)) else Compose(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.ops):
            y = op.pinv(y)
        return y

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._require_linear("adjoint")
        for op in reversed(self.ops):
            y = op.adjoint(y)
        return y

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        self._require_linear("regularized_pinv")
        if len(self.ops) == 1:
            return self.ops[0].regularized_pinv(v, lam)
        return super().regularized_pinv(v, lam)

    def _require_linear(self, what: str) -> None:
        if not self.linear:
            nonlinear = [op.spec for op in self.ops if not op.linear]
            raise ValueError(f"{what} needs a linear chain, but {self.spec} contains non-linear {nonlinear}")
