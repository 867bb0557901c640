"""``torch.compile`` of a method's whole step, guidance VJP included. The only place with dynamo/Inductor flags.

How the VJP compiles: under dynamo, :func:`pgdm.methods.input_vjp` (the input-only VJP of
:func:`pgdm.methods.pigdm_step` and of RG and DPS) takes it with ``torch.func.vjp``, which dynamo traces (forward and
backward in one graph, AOTAutograd partitioning them) with ``fullgraph=True`` and no special flag, on
torch 2.11 and 2.13 alike; eager runs take it with ``torch.autograd.grad``. (``x.requires_grad_()`` +
``torch.autograd.grad`` needs ``trace_autograd_ops`` on 2.13 and breaks the graph on 2.11, whose
dynamo refuses ``requires_grad_()``: the device machines run 2.11.) Flags are scoped to the engine's
own calls (:func:`dynamo_flags`), never set globally.

Mode: ``"default"`` unless the config names another. The engine captures its own CUDA graph around
the whole step (the step updates its static buffers in place, which Inductor's ``reduce-overhead``
cudagraph trees would skip); ``max-autotune`` modes benchmark kernel choices for every convolution of
forward and backward, which for ADM-256 turns minutes of compilation into many more (on an H200 the
benchmark of the ``default`` compile had not finished in 163 s; benchmarks/RESULTS.md), and ``max-autotune`` /
``reduce-overhead`` add Inductor's own CUDA graphs, which clash with the engine's capture. Shapes are specialised
(``dynamic=False``): the engine pads batches to a few sizes, one compiled graph each.
"""
from __future__ import annotations

import contextlib
import functools
import os
import traceback
import types
from typing import Callable, Iterator, Mapping

import torch

__all__ = ["StepCompileError", "check_inductor_options", "dynamo_flags", "compile_step", "failure_reason", "fresh_function"]

# Recompiles allowed per compiled step: one per (batch size, operator, noisy?) the engine meets.
_RECOMPILE_LIMIT = 64


class StepCompileError(RuntimeError):
    """``torch.compile`` could not build the step (no C++ compiler, an Inductor failure): one line saying why."""


def check_inductor_options(options: Mapping[str, object] | None) -> dict[str, object]:
    """``options`` as a dict, every name checked against ``torch._inductor.config`` (dotted names for nested settings)."""
    options = dict(options or {})
    known = torch._inductor.config.get_config_copy()
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise ValueError(f"unknown Inductor option(s) {', '.join(unknown)}; expected names from torch._inductor.config, e.g. conv_1x1_as_mm")
    return options


@contextlib.contextmanager
def dynamo_flags(device: torch.device, channels_last: bool = False, options: Mapping[str, object] | None = None) -> Iterator[None]:
    """Settings for compiling the step on ``device``: more recompiles, two Inductor patches, then the caller's ``options``.

    * CPU without ``channels_last``: no convolution relayout (see :func:`compile_step`).
    * CUDA: no reuse of dead buffers' storage by later buffers. The memory-efficient attention kernel
      returns its (unused) philox seed/offset as CPU tensors while their meta functions say "device":
      Inductor then hands that CPU storage to a later int64 scalar buffer of the step and launches a CUDA
      kernel on it ("CUDA driver error: invalid argument"; seen on an H200, torch 2.11, float32 step at
      batch 1, where the noise's per-image key is such a scalar). Dead buffers are still freed, and the caching
      allocator (or the CUDA graph's pool) reuses their memory: peak memory was unchanged on CPU (CUDA: unmeasured).
    """
    patches = {"layout_optimization": False} if device.type == "cpu" and not channels_last else {}
    if device.type == "cuda":
        patches["allow_buffer_reuse"] = False
    patches.update(options or {})
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT), torch._inductor.config.patch(patches):
        yield


def fresh_function(fn: Callable) -> Callable:
    """A copy of ``fn`` with its own code object, so dynamo keeps a separate cache (and recompile count) for it.

    Dynamo stores compiled graphs on the code object; every engine compiles its own copy of the step
    so that engines with different models or operators never evict each other's graphs.
    """
    code = fn.__code__.replace()  # a new code object with the same bytecode
    new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return functools.update_wrapper(new, fn)


def failure_reason(err: BaseException) -> str:
    """One line naming ``err``: its type and first non-blank message line, or, for a bare internal assertion
    (Inductor raises ``AssertionError()`` with no message), the file and line that raised it."""
    name = type(err).__name__
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if first:
        return first if name in first else f"{name}: {first}"
    frames = traceback.extract_tb(err.__traceback__)
    return f"{name} at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else name


def compile_step(
    fn: Callable, device: torch.device, mode: str | None = None, *, channels_last: bool = False, options: Mapping[str, object] | None = None
) -> Callable:
    """``torch.compile(fn, mode=…, fullgraph=True, dynamic=False)``, called under :func:`dynamo_flags` (``options``:
    Inductor settings, checked by :func:`check_inductor_options`).

    Compilation happens on the first call for each new input shape/operator; a graph break raises, and a
    failing backend (e.g. no C++ compiler for Inductor on CPU) raises :class:`StepCompileError`.
    On CPU, Inductor turns every convolution channels-last whenever oneDNN is available; the engine
    lets it only when ``channels_last`` is asked for: float32 NHWC convolutions and their input
    gradients are slower on CPU (compiled fp32 step 156 ms with the relayout, 131 ms without, 137–140 ms
    eager; default model, batch 16, 2 threads; benchmarks/RESULTS.md). On CUDA, Inductor keeps its layout
    heuristics and does not recycle buffer storage (:func:`dynamo_flags` says why).
    """
    options = check_inductor_options(options)
    compiled = torch.compile(fresh_function(fn), mode=mode or "default", fullgraph=True, dynamic=False)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with dynamo_flags(device, channels_last, options):
            try:
                return compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                reason = failure_reason(getattr(err, "inner_exception", None) or err)
                raise StepCompileError(f"torch.compile could not build the step ({reason}); use backend='eager' or fix the toolchain") from err

    run.compiled = compiled  # type: ignore[attr-defined]
    return run
