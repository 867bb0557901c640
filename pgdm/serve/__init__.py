"""Serving pgdm: ``pgdm serve`` (HTTP, FastAPI + uvicorn, in :mod:`pgdm.serve.app`) and its Python core,
:class:`DynamicBatcher`, which batches concurrent restore requests on the engine's ``RestoreQueue``.

The HTTP parts need ``pip install 'pgdm[serve]'``; importing this package does not.
"""
from .batcher import Closed, DynamicBatcher, EnginePool, QueueFull, RestoreResult, SamplingError
from .cli import add_parser

__all__ = ["DynamicBatcher", "EnginePool", "RestoreResult", "QueueFull", "Closed", "SamplingError", "add_parser"]
