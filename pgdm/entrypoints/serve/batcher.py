"""The server's Python core: dynamic batching of restore requests on :class:`pgdm.engine.RestoreQueue`.

:class:`DynamicBatcher` takes requests from any number of threads and hands them to one worker thread. The
worker waits up to ``max_wait_s`` after the oldest pending request for others (until ``max_batch`` rows are
pending), then runs everything it took through a ``RestoreQueue`` per (steps, η) engine; the queue merges
requests whose operators share a signature and image size into batches of at most ``max_batch`` rows.
An image's noise depends only on its seed and the step (``pgdm.rng``), so a result equals the unbatched
one up to the network's batch-size-dependent rounding (bitwise at equal batch size).

A failing batch is rerun request by request, so one bad request fails alone; a result with a NaN fails
that request only (:class:`SamplingError`).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from pgdm.denoiser import Denoiser
from pgdm.engine import Engine, EngineConfig
from pgdm.interop import like, to_tensor
from pgdm.metrics import consistency_rms
from pgdm.operators import Operator
from pgdm.sampler import NonFiniteError

__all__ = ["EnginePool", "DynamicBatcher", "RestoreResult", "QueueFull", "Closed", "SamplingError"]


class QueueFull(RuntimeError):
    """The batcher holds ``max_queue`` pending requests; ``retry_after`` estimates the seconds until there is room."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({pending} requests pending); retry in {retry_after} s")
        self.retry_after = retry_after


class Closed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


class SamplingError(RuntimeError):
    """Sampling produced a non-finite result for this request."""


@dataclass(frozen=True)
class RestoreResult:
    """One finished request. ``x``, ``std``: (B, C, H, W) in [-1, 1] (std ≥ 0, only when asked for), of the caller's
    array type; ``consistency_rms``: (B,) RMS of h(x̂) − y per image; ``queued_s``: from submission to the start of
    its batch; ``run_s``: the wall time of the engine run it was part of."""

    x: Any
    std: Any | None
    consistency_rms: list[float]
    queued_s: float
    run_s: float


@dataclass
class _Job:
    y: torch.Tensor
    op: Operator
    sigma_y: Any
    seed: Any
    class_labels: Any
    num_samples: int
    return_std: bool
    steps: int
    eta: float | None
    caller: Any  # the caller's y: results come back as its array type
    future: Future
    submitted: float  # time.perf_counter() at submission
    started: float = 0.0  # … and when its batch started

    @property
    def rows(self) -> int:
        return self.y.shape[0] * self.num_samples


class EnginePool:
    """One :class:`~pgdm.engine.Engine` per (steps, η), built on first use, all sharing one prepared network.

    ``config`` gives every setting but steps and η. At most ``capacity`` engines are kept (least recently
    used dropped first). Thread-safe.
    """

    def __init__(self, denoiser: Denoiser, config: EngineConfig, capacity: int = 8) -> None:
        self.config, self.capacity = replace(config, copy_model=False), capacity
        self.default = Engine(denoiser, self.config)  # freezes and casts the network once; the others share it
        self.denoiser = self.default.denoiser
        self.device = self.default.device
        self._engines: OrderedDict[tuple[int, float | None], Engine] = OrderedDict({(config.steps, config.eta): self.default})
        self._lock = threading.Lock()

    def get(self, steps: int, eta: float | None) -> Engine:
        """The engine running ``steps`` steps with DDIM η = ``eta`` (None: the method's default)."""
        key = (int(steps), None if eta is None else float(eta))
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = Engine(self.denoiser, replace(self.config, steps=key[0], eta=key[1]))
                self._engines[key] = engine
                while len(self._engines) > self.capacity:
                    self._engines.popitem(last=False)
            self._engines.move_to_end(key)
            return engine


class DynamicBatcher:
    """Batches concurrent restore requests (see the module docstring).

    Args:
        pool: the engines to run on.
        max_batch: rows (images × samples) per engine batch at most, and the most a worker pass takes.
        max_wait_s: how long the oldest pending request waits for others.
        max_queue: pending requests at most; :meth:`submit` raises :class:`QueueFull` beyond.
        on_batch: called with the rows of every batch handed to the engine (metrics).

    Example:
        >>> batcher = DynamicBatcher(EnginePool(pgdm.load_model("default"), EngineConfig(steps=20)))
        >>> result = batcher.submit(y, op, seed=0).result()     # RestoreResult; y may be a NumPy array
        >>> batcher.close()
    """

    def __init__(
        self,
        pool: EnginePool,
        max_batch: int = 16,
        max_wait_s: float = 0.01,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0 or max_queue < 0:
            raise ValueError(f"need max_batch ≥ 1, max_wait_s ≥ 0, max_queue ≥ 0; got {max_batch}, {max_wait_s}, {max_queue}")
        self.pool, self.max_batch, self.max_wait_s, self.max_queue = pool, max_batch, max_wait_s, max_queue
        self.on_batch = on_batch
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._last_run_s = 1.0
        self._worker = threading.Thread(target=self._loop, name="pgdm-batcher", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the batch running now)."""
        return len(self._pending)

    def submit(
        self,
        y: Any,
        op: Operator,
        sigma_y: Any = 0.0,
        seed: Any = 0,
        class_labels: Any = None,
        *,
        num_samples: int = 1,
        return_std: bool = False,
        steps: int | None = None,
        eta: float | None = None,
    ) -> Future:
        """Queue one restore; returns a Future of its :class:`RestoreResult`.

        Arguments as :meth:`pgdm.Restorer.restore` (σ_y on the [0, 1] pixel scale), plus this request's
        ``steps`` and ``eta`` (default: the pool's). ``y``: (B, …) torch tensor or any DLPack array, moved
        to the engine's device. Raises ValueError for a request the engine would refuse (checked now, in the
        caller's thread), :class:`QueueFull` or :class:`Closed`.
        """
        steps = self.pool.config.steps if steps is None else steps
        eta = self.pool.config.eta if eta is None else eta
        engine = self.pool.get(steps, eta)
        y_t = to_tensor(y, engine.device)
        if not bool(torch.isfinite(y_t).all()):
            raise ValueError("the measurement contains NaN or infinite values")
        op = op.to(engine.device)
        engine.plan(y_t, op, sigma_y, seed, class_labels, num_samples=num_samples)  # validates; rebuilt in the batch
        job = _Job(y_t, op, sigma_y, seed, class_labels, num_samples, return_std, steps, eta, y, Future(), time.perf_counter())
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(len(self._pending), self._retry_after())
            self._pending.append(job)
            self._cond.notify()
        return job.future

    def restore(self, y: Any, op: Operator, *args, **kwargs) -> RestoreResult:
        """:meth:`submit` and wait for the result."""
        return self.submit(y, op, *args, **kwargs).result()

    def close(self) -> None:
        """Refuse new requests, finish every pending one, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._worker.join()

    # ------------------------------------------------------------------ worker

    def _retry_after(self) -> int:
        """Whole seconds until the queue has drained by one batch's worth, from the last run's wall time."""
        return max(1, math.ceil(self._last_run_s * max(1, len(self._pending)) / self.max_batch))

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                self._run(jobs)
            except BaseException as err:  # never leave a caller waiting, whatever went wrong
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)

    def _take(self) -> list[_Job] | None:
        """The next pass's jobs (oldest first, ``max_batch`` rows at most, at least one); None once closed and empty."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].submitted + self.max_wait_s
            while not self._closing and sum(j.rows for j in self._pending) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs: list[_Job] = []
            rows = 0
            while self._pending and (not jobs or rows + self._pending[0].rows <= self.max_batch):
                job = self._pending.popleft()
                if job.future.set_running_or_notify_cancel():  # False: the caller gave up (timeout)
                    jobs.append(job)
                    rows += job.rows
            return jobs

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[tuple[int, float | None], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((job.steps, job.eta), []).append(job)
        for (steps, eta), members in groups.items():
            self._run_isolated(self.pool.get(steps, eta), members)

    def _run_isolated(self, engine: Engine, jobs: list[_Job]) -> None:
        """Run ``jobs`` together; if that raises, rerun them one by one so only the failing request fails."""
        try:
            results, run_s = self._run_queue(engine, jobs)
        except Exception as err:
            if len(jobs) == 1:
                jobs[0].future.set_exception(err)
                return
            for job in jobs:
                self._run_isolated(engine, [job])
            return
        for job, result in zip(jobs, results):
            if isinstance(result, NonFiniteError):  # this request only: the others of the batch finished
                job.future.set_exception(SamplingError(f"sampling produced NaN for this request (seed {job.seed}); try another seed or fewer steps"))
            else:
                self._finish(job, *result, run_s)

    @torch.no_grad()
    def _run_queue(self, engine: Engine, jobs: list[_Job]) -> tuple[list, float]:
        queue = engine.queue(max_batch=self.max_batch)
        for j in jobs:
            queue.submit(j.y, j.op, j.sigma_y, j.seed, j.class_labels, num_samples=j.num_samples, return_std=True)
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        results = queue.run(non_finite="return")
        run_s = time.perf_counter() - started
        self._last_run_s = run_s
        if self.on_batch is not None:
            for rows in queue.batches_run:
                self.on_batch(rows)
        return results, run_s

    def _finish(self, job: _Job, mean: torch.Tensor, std: torch.Tensor, run_s: float) -> None:
        rms = consistency_rms(job.op, mean, job.y).tolist()
        out = RestoreResult(like(mean, job.caller), like(std, job.caller) if job.return_std else None, rms, job.started - job.submitted, run_s)
        job.future.set_result(out)
