"""Fast execution of every method's step: compiled VJP, CUDA graphs, precision, batching.

``pgdm.engine.restorer(denoiser, backend="auto" | "eager" | "compile" | "cudagraph", precision=..., steps=...)``
returns an :class:`Engine` whose ``restore`` is a drop-in for :meth:`pgdm.Restorer.restore`;
``engine.queue()`` batches mixed requests. Reference: docs/engine.md.

The names load on first use (PEP 562): ``pgdm.engine.options`` (the choices by name) imports without the rest.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batching import RestoreQueue, RestoreRequest
    from .compile import StepCompileError
    from .graphs import GraphKey
    from .options import BACKENDS, PRECISIONS
    from .runner import Engine, EngineConfig, engine_step_, gather_step_no_sync, restorer

_WHERE = {
    "BACKENDS": "options",
    "PRECISIONS": "options",
    "Engine": "runner",
    "EngineConfig": "runner",
    "GraphKey": "graphs",
    "RestoreQueue": "batching",
    "RestoreRequest": "batching",
    "StepCompileError": "compile",
    "engine_step_": "runner",
    "gather_step_no_sync": "runner",
    "restorer": "runner",
}
__all__ = ["BACKENDS", "PRECISIONS", "Engine", "EngineConfig", "GraphKey", "RestoreQueue", "RestoreRequest", "StepCompileError",
           "engine_step_", "gather_step_no_sync", "restorer"]  # fmt: skip


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pgdm.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
