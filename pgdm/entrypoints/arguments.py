"""Command-line options shared by the commands that load a model and run the engine (one name and one help
text per setting, wherever a user meets it)."""
from __future__ import annotations

import argparse

from pgdm.engine.options import BACKENDS, PRECISIONS

__all__ = ["add_model_options", "add_engine_options"]


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --config."""
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder (default: %(default)s)")
    p.add_argument("--config", help="model preset name (e.g. 256x256_diffusion_uncond) or JSON config file, when the layout cannot be inferred")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--device, --backend, --precision, --channels-last."""
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default: %(default)s)")
    p.add_argument("--backend", choices=BACKENDS, default="eager", help="how the steps run: eager (pgdm.Restorer), compile "
                   "(torch.compile of the step), cudagraph (CUDA only) (default: %(default)s)")  # fmt: skip
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="network precision; x̂, h, h† and the update stay "
                   "float32 (bf16 is slower than fp32 on CPUs without AVX512-BF16 or AMX) (default: %(default)s)")  # fmt: skip
    p.add_argument("--channels-last", action="store_true", help="run the network in NHWC layout (pgdm.engine)")
