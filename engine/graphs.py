"""CUDA graphs around a method's whole step: static buffers, capture, and the graph cache.

The runner (``engine/runner.py``) owns warm-up and data loading; this module only keeps memory and
graphs. A graph is captured once per :class:`GraphKey` over fixed views of :class:`StaticBuffers`,
then replayed for every step of every batch with that key: the step reads its coefficients from
device tables indexed by a device step counter and writes the next sample into the static ``x`` in
place, so a replay needs no host work besides the launch.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple, Sequence

import torch

from pgdm.operators import Operator

__all__ = ["GraphKey", "StaticBuffers", "StepNotCapturable", "capture_cuda_graph", "GraphEntry", "GraphDispatcher"]


class GraphKey(NamedTuple):
    """What a captured step depends on: (batch, C, H, W, dtype, operator signature, noisy?, class-conditional?, clip x̂?)."""

    batch: int
    channels: int
    height: int
    width: int
    dtype: torch.dtype
    operator: Hashable
    noisy: bool
    class_cond: bool
    clip_denoised: bool


class StaticBuffers:
    """Device tensors allocated once at the largest batch and updated in place; graphs read row views.

    ``rows(name, n, shape, dtype)`` is the view ``buf[:n]`` of a (max_batch, *shape) buffer, allocated on
    the first request for that (name, shape, dtype) and reused afterwards (re-setup is a no-op when
    the request fits). ``table(name, like)`` is a whole-run tensor (the (N,) coefficient tables).
    """

    def __init__(self, max_batch: int, device: torch.device) -> None:
        self.max_batch, self.device = max_batch, device
        self._rows: dict[tuple, torch.Tensor] = {}
        self._tables: dict[tuple, torch.Tensor] = {}

    def rows(self, name: str, n: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        if n > self.max_batch:
            raise ValueError(f"static buffer {name!r} holds {self.max_batch} rows, asked for {n}")
        key = (name, tuple(shape), dtype)
        if key not in self._rows:
            self._rows[key] = torch.zeros(self.max_batch, *shape, dtype=dtype, device=self.device)
        return self._rows[key][:n]

    def table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, tuple(like.shape), like.dtype)
        if key not in self._tables:
            self._tables[key] = torch.zeros_like(like, device=self.device)
        return self._tables[key]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._rows.values(), *self._tables.values()))


class StepNotCapturable(RuntimeError):
    """The step synchronised with the host during a checked warm-up run, so it cannot be captured."""


def capture_cuda_graph(
    fn: Callable[[], None], *, stream: "torch.cuda.Stream", pool=None, warmup_iters: int = 2
) -> "torch.cuda.CUDAGraph":
    """Warm ``fn`` up on ``stream``, check it never syncs with the host, then capture it on the same stream.

    The first ``warmup_iters − 1`` runs build cuDNN/cuBLAS/cuFFT plans and workspaces (and compile an
    Inductor step); the last one runs under ``torch.cuda.set_sync_debug_mode("error")``, so a host sync
    (``.item()``, a blocking host-to-device copy such as ``torch.tensor(0.0, device="cuda")``) raises
    :class:`StepNotCapturable` *before* capture instead of invalidating it. Warm-up and capture share
    one stream so per-stream workspaces exist before capture. ``fn`` must read and write only tensors
    that outlive the graph (static buffers, weights, operator caches); what it allocates lives in the
    graph's private ``pool``. The warm-up runs change the static buffers: reload them before replaying.
    """
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup_iters - 1):
            fn()
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
        except RuntimeError as e:
            if "synchroniz" in str(e).lower():
                raise StepNotCapturable(f"the step synchronises with the host, so it cannot be captured: {e}") from e
            raise
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=stream):
        fn()
    return graph


@dataclass
class GraphEntry:
    """A captured step and the static tensors it reads and writes (views of :class:`StaticBuffers`)."""

    op: Operator  # the static operator instance the graph runs (per-row data refreshed in place)
    inputs: dict[str, torch.Tensor | None]  # x, y, y_pinv, keys, sigma_y2, class_labels: (batch, …) views
    tables: dict[str, torch.Tensor]  # (N,) per-step coefficients, indexed by the device step counter
    graph: "torch.cuda.CUDAGraph | None" = None
    runs: int = 0


class GraphDispatcher:
    """Graph cache keyed by :class:`GraphKey`; batches pad up to the smallest captured size that fits.

    ``padded_batch(rows)`` is that size, or None above the largest (such batches run eagerly). At most
    ``max_graphs`` graphs are kept; once full, new keys run eagerly too.
    """

    def __init__(self, batch_sizes: Sequence[int], max_graphs: int) -> None:
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        if not self.batch_sizes or self.batch_sizes[0] < 1:
            raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
        self.max_graphs = max_graphs
        self.graphs: dict[GraphKey, GraphEntry] = {}

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def padded_batch(self, rows: int) -> int | None:
        i = bisect.bisect_left(self.batch_sizes, rows)
        return self.batch_sizes[i] if i < len(self.batch_sizes) else None

    def get(self, key: GraphKey) -> GraphEntry | None:
        return self.graphs.get(key)

    def full(self) -> bool:
        return len(self.graphs) >= self.max_graphs

    def add(self, key: GraphKey, entry: GraphEntry) -> None:
        self.graphs[key] = entry
