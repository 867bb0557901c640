"""The engine's choices by name, importable without loading the engine (the command line lists them in --help)."""
from __future__ import annotations

import torch

__all__ = ["BACKENDS", "PRECISIONS", "PRECISION_CHOICES"]

# how a plan runs: eagerly, as one torch.compile'd step, as that step captured in a CUDA graph, or as the step
# exported to ONNX and run by ONNX Runtime (CPU); "auto" measures the ones this device can run at warm-up and keeps
# the fastest (engine/autotune.py)
BACKENDS: tuple[str, ...] = ("auto", "eager", "compile", "cudagraph", "onnx")

# precision name → dtype of the network body. tf32 is float32 storage with TF32 tensor-core math (CUDA only).
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

# what a user may ask for: a precision by name, or "auto" (the fastest the hardware computes natively, measured)
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)
