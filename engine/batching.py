"""Batch scheduling: a queue of restore requests of mixed tasks, grouped into batches, results in request order.

Every request is planned on its own with :func:`pgdm.sampler.plan_sampling` (its seeds, its K
posterior samples, its h†(y)); plans whose operators share a ``signature()`` (the operators' own batch
semantics, :class:`pgdm.ops.Operator`) and whose images share a size are then concatenated row-wise into one batch. Because the noise of
an image depends only on its seed and the step (``pgdm.rng``), an image's result does not depend on
the batch it ran in (up to the network's batch-size-dependent rounding).

Modes:
  ``"throughput"``: groups are packed into batches of at most the engine's largest batch size
  (``EngineConfig.batch_sizes``); the engine pads each batch up to a captured size.
  ``"latency"``: requests run one at a time in submission order, each at its own size (batch 1 for
  a single-image request), with no waiting for others.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import torch

from pgdm.sampler import NonFiniteError, SamplingPlan, summarize_samples

if TYPE_CHECKING:
    from .runner import Engine

__all__ = ["RestoreRequest", "RestoreQueue", "concat_plans", "slice_plan", "pad_plan", "group_key"]


def _pad_rows(t: torch.Tensor, padded: int) -> torch.Tensor:
    """(rows, …) → (padded, …) by repeating row 0."""
    return t if t.shape[0] == padded else torch.cat([t, t[:1].expand(padded - t.shape[0], *t.shape[1:])])


def concat_plans(plans: Sequence[SamplingPlan]) -> SamplingPlan | None:
    """One plan running all rows of ``plans`` (same engine settings and group key); None if the operators cannot merge."""
    if len(plans) == 1:
        return plans[0]
    op = plans[0].op.concat_rows([p.op for p in plans[1:]], [p.rows for p in plans])
    return None if op is None else SamplingPlan.join_rows(plans, op)


def slice_plan(plan: SamplingPlan, start: int, stop: int) -> SamplingPlan | None:
    """Rows ``start:stop`` of a plan (None if its operator cannot be sliced)."""
    if (start, stop) == (0, plan.rows):
        return plan
    op = plan.op.slice_rows(plan.rows, start, stop)
    return None if op is None else dataclasses.replace(plan.map_rows(lambda t: t[start:stop], op), num_samples=1)


def pad_plan(plan: SamplingPlan, padded: int) -> SamplingPlan | None:
    """The plan padded to ``padded`` rows by repeating row 0 (None if its operator cannot be padded)."""
    if padded == plan.rows:
        return plan
    op = plan.op.pad_rows(plan.rows, padded)
    return None if op is None else plan.map_rows(lambda t: _pad_rows(t, padded), op)


def group_key(plan: SamplingPlan) -> Hashable:
    """Requests with equal keys can share a batch: (operator signature, image and measurement shapes, dtype, device, noisy?, labels?, clip x̂?)."""
    return (
        plan.op.signature(),
        tuple(plan.x_init.shape[1:]),
        tuple(plan.y.shape[1:]),
        plan.x_init.dtype,
        plan.x_init.device,
        plan.sigma_y2 is not None,
        plan.class_labels is not None,
        plan.clip_denoised,
    )


@dataclass
class RestoreRequest:
    """The arguments of one :meth:`Engine.restore` call."""

    y: torch.Tensor
    op: Any
    sigma_y: Any = 0.0
    seed: Any = 0
    class_labels: Any = None
    num_samples: int = 1
    return_std: bool = False


def _summary(x: torch.Tensor, request: RestoreRequest, raise_non_finite: bool):
    try:
        return summarize_samples(x, request.num_samples, request.return_std)
    except NonFiniteError as err:
        if raise_non_finite:
            raise
        return err


class RestoreQueue:
    """Collects restore requests and runs them in batches; ``run()`` returns results in submission order.

    Example:
        >>> q = RestoreQueue(engine)                       # throughput mode
        >>> a = q.submit(y_sr, sr_op, seed=0)             # returns the request's index
        >>> b = q.submit(y_inp, inpaint_op, seed=[5, 6])
        >>> out = q.run()                                 # out[a], out[b]: what engine.restore would return
    """

    def __init__(self, engine: "Engine", mode: str = "throughput", max_batch: int | None = None) -> None:
        if mode not in ("throughput", "latency"):
            raise ValueError(f"mode must be 'throughput' or 'latency', got {mode!r}")
        self.engine, self.mode = engine, mode
        self.max_batch = max_batch or engine.max_batch
        self.requests: list[RestoreRequest] = []
        self.batches_run: list[int] = []  # rows of each batch handed to the engine (before padding)

    def submit(
        self, y: torch.Tensor, op, sigma_y=0.0, seed=0, class_labels=None, *, num_samples: int = 1, return_std: bool = False
    ) -> int:
        """Queue one restore (same arguments as :meth:`Engine.restore`); returns its index in ``run()``'s list."""
        self.requests.append(RestoreRequest(y, op, sigma_y, seed, class_labels, num_samples, return_std))
        return len(self.requests) - 1

    def __len__(self) -> int:
        return len(self.requests)

    @torch.no_grad()
    def run(self, non_finite: str = "raise") -> list:
        """Run every queued request and empty the queue. Returns one result per request, in order.

        A request whose samples hold NaN/Inf raises :class:`pgdm.sampler.NonFiniteError` (``non_finite="raise"``)
        or has that exception as its result (``"return"``), so the other requests of its batch keep theirs.
        """
        if non_finite not in ("raise", "return"):
            raise ValueError(f"non_finite must be 'raise' or 'return', got {non_finite!r}")
        requests, self.requests = self.requests, []
        plans = [self.engine.plan(r.y, r.op, r.sigma_y, r.seed, r.class_labels, num_samples=r.num_samples) for r in requests]
        xs: list[torch.Tensor | None] = [None] * len(requests)
        if self.mode == "latency":
            for i, plan in enumerate(plans):
                xs[i] = self._run(plan)
        else:
            groups: dict[Hashable, list[int]] = {}
            for i, plan in enumerate(plans):
                groups.setdefault(group_key(plan), []).append(i)
            for members in groups.values():
                self._run_group([plans[i] for i in members], members, xs)
        return [_summary(x, r, non_finite == "raise") for x, r in zip(xs, requests)]

    def _run(self, plan: SamplingPlan) -> torch.Tensor:
        self.batches_run.append(plan.rows)
        return self.engine.run_plan(plan)

    def _run_group(self, plans: list[SamplingPlan], members: list[int], xs: list) -> None:
        merged = concat_plans(plans)
        if merged is None:  # operators with per-image parameters the engine cannot merge: one by one
            for i, plan in zip(members, plans):
                xs[i] = self._run(plan)
            return
        total = merged.rows
        chunks = []
        for start in range(0, total, self.max_batch):
            part = slice_plan(merged, start, min(start + self.max_batch, total))
            if part is None:  # cannot split rows: run the whole group at once
                chunks = [self._run(merged)]
                break
            chunks.append(self._run(part))
        out = torch.cat(chunks)
        offset = 0
        for i, plan in zip(members, plans):
            n = plan.rows
            xs[i] = out[offset : offset + n]
            offset += n
