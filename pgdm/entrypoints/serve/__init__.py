"""Serving pgdm: ``pgdm serve`` (HTTP, FastAPI + uvicorn, in :mod:`pgdm.entrypoints.serve.app`) and its Python core,
:class:`DynamicBatcher`, which batches concurrent restore requests on the engine's ``RestoreQueue``.

The HTTP parts need ``pip install 'pgdm[serve]'``. The names load on first use, so the command line's
``serve --help`` imports neither the engine nor the server stack.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batcher import Closed, DynamicBatcher, EnginePool, QueueFull, RestoreResult, SamplingError

_BATCHER = ("Closed", "DynamicBatcher", "EnginePool", "QueueFull", "RestoreResult", "SamplingError")
__all__ = ["Closed", "DynamicBatcher", "EnginePool", "QueueFull", "RestoreResult", "SamplingError"]


def __getattr__(name: str):
    if name in _BATCHER:
        return getattr(importlib.import_module(".batcher", __name__), name)
    raise AttributeError(f"module 'pgdm.entrypoints.serve' has no attribute {name!r}")
