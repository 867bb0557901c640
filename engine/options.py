"""The engine's choices by name, importable without loading the engine (the command line lists them in --help)."""
from __future__ import annotations

import torch

__all__ = ["BACKENDS", "PRECISIONS"]

# how a plan runs: the fastest of the others, measured (pgdm.engine.autotune); eagerly, as one torch.compile'd step,
# or as that step captured in a CUDA graph
BACKENDS: tuple[str, ...] = ("auto", "eager", "compile", "cudagraph")

# precision name → dtype of the network body. tf32 is float32 storage with TF32 tensor-core math (CUDA only).
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
