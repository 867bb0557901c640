"""Fast execution of every method's step: compiled VJP, CUDA graphs, precision, batching.

``pgdm.engine.restorer(denoiser, backend="auto" | "eager" | "compile" | "cudagraph", precision=..., steps=...)``
returns an :class:`Engine` whose ``restore`` is a drop-in for :meth:`pgdm.Restorer.restore`;
``engine.queue()`` batches mixed requests. Reference: docs/engine.md.
"""
from .batching import RestoreQueue, RestoreRequest
from .compile import StepCompileError
from .graphs import GraphKey
from .precision import PRECISIONS
from .runner import BACKENDS, Engine, EngineConfig, engine_step_, gather_step_no_sync, restorer

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Engine",
    "EngineConfig",
    "GraphKey",
    "RestoreQueue",
    "RestoreRequest",
    "StepCompileError",
    "engine_step_",
    "gather_step_no_sync",
    "restorer",
]
