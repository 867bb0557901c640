"""``torch.compile`` of the whole ΠGDM step, guidance VJP included. The only place with dynamo/Inductor flags.

How the VJP compiles: :func:`pgdm.sampler.pigdm_step` takes the input-only VJP with ``torch.func.vjp``,
which dynamo traces (forward and backward in one graph, AOTAutograd partitioning them) with
``fullgraph=True`` and no special flag, on torch 2.11 and 2.13 alike. (``x.requires_grad_()`` +
``torch.autograd.grad`` needs ``trace_autograd_ops`` on 2.13 and breaks the graph on 2.11, whose
dynamo refuses ``requires_grad_()``: the device machines run 2.11.) Flags are scoped to the engine's
own calls (:func:`dynamo_flags`), never set globally.

Modes: ``"default"`` on CPU; on CUDA ``"max-autotune-no-cudagraphs"`` (the engine captures its own
CUDA graph around the whole step, and the step updates its static buffers in place, which Inductor's
``reduce-overhead`` cudagraph trees would skip). Shapes are specialised (``dynamic=False``): the engine
pads batches to a few sizes, one compiled graph each.
"""
from __future__ import annotations

import contextlib
import functools
import types
from typing import Callable, Iterator

import torch

__all__ = ["default_mode", "dynamo_flags", "compile_step", "fresh_function"]

# Recompiles allowed per compiled step: one per (batch size, operator, noisy?) the engine meets.
_RECOMPILE_LIMIT = 64


def default_mode(device: torch.device) -> str:
    """The ``torch.compile`` mode the engine uses on ``device`` unless the config names one."""
    return "max-autotune-no-cudagraphs" if device.type == "cuda" else "default"


@contextlib.contextmanager
def dynamo_flags(keep_layout: bool = False) -> Iterator[None]:
    """Settings for tracing the step: more recompiles, and with ``keep_layout`` Inductor's convolution
    relayout switched off (otherwise its own configuration holds)."""
    layout = torch._inductor.config.patch(layout_optimization=False) if keep_layout else contextlib.nullcontext()
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT), layout:
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


def compile_step(fn: Callable, device: torch.device, mode: str | None = None, *, channels_last: bool = False) -> Callable:
    """``torch.compile(fn, mode=…, fullgraph=True, dynamic=False)``, called under :func:`dynamo_flags`.

    Compilation happens on the first call for each new input shape/operator; a graph break raises.
    On CPU, Inductor turns every convolution channels-last whenever oneDNN is available; the engine
    lets it only when ``channels_last`` is asked for: float32 NHWC convolutions and their input
    gradients are slower on CPU (compiled fp32 step 156 ms with the relayout, 131 ms without, 137–140 ms
    eager; default model, batch 16, 2 threads; benchmarks/RESULTS.md). Elsewhere Inductor's own
    configuration and heuristics hold.
    """
    compiled = torch.compile(fresh_function(fn), mode=mode or default_mode(device), fullgraph=True, dynamic=False)
    keep_layout = device.type == "cpu" and not channels_last

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with dynamo_flags(keep_layout):
            return compiled(*args, **kwargs)

    run.compiled = compiled  # type: ignore[attr-defined]
    return run
