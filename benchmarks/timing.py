"""The one timer of the benchmarks: ``triton.testing.do_bench`` on CUDA, ``time.perf_counter`` elsewhere."""
from __future__ import annotations

import contextlib
import fcntl
import statistics
import time
from typing import Callable, Iterator

import torch


def time_ms(fn: Callable[[], object], device: torch.device | str, reps: int, warmup: int = 2) -> tuple[float, float, float]:
    """(median, 20 %, 80 %) milliseconds per call of ``fn`` over at least ``reps`` timed calls after ``warmup`` calls.

    CUDA: ``do_bench`` with CUDA events (L2 flushed between calls) at quantiles 0.5/0.2/0.8; its ``warmup``
    and ``rep`` are milliseconds, so they are sized from one timed call. CPU: wall time of each of ``reps`` calls.
    """
    if torch.device(device).type == "cuda":
        import triton.testing

        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one_ms = (time.perf_counter() - start) * 1e3
        quantiles = triton.testing.do_bench(fn, warmup=max(25, warmup * one_ms), rep=max(100, reps * one_ms), quantiles=[0.5, 0.2, 0.8])
        return tuple(quantiles)  # type: ignore[return-value]
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else samples * 9
    return statistics.median(samples), q[1], q[7]


def interleaved_ms(fns: dict[str, Callable[[], object]], device: torch.device | str, reps: int) -> dict[str, float]:
    """Median milliseconds per call of each of ``fns``, calling them in turn ``reps`` times.

    For comparisons on a shared machine: a load change hits every candidate alike instead of one of them.
    Each function should already be warm; on CUDA the device is synchronised around every call.
    """
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


@contextlib.contextmanager
def exclusive_device(lock_path: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (None: no lock) while timing.

    device_check.sh compiles the slow steps in background processes while other blocks use the GPU; each
    process times only while it holds the lock (the script's foreground blocks take the same lock with
    ``flock``), so no two measurements share the device.
    """
    if lock_path is None:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
