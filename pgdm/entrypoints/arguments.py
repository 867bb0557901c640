"""Command-line options shared by the commands that load a model and run the engine (one name and one help
text per setting, wherever a user meets it)."""
from __future__ import annotations

import argparse

from pgdm.engine.options import BACKENDS, PRECISION_CHOICES

__all__ = ["add_model_options", "add_engine_options", "add_canvas_options", "canvas_size"]


def add_model_options(p: argparse.ArgumentParser, default: str | None = "default") -> None:
    """--model, --config. ``default`` None: the embedded model that fits the inputs' colour."""
    chosen = "'photo' when an input is in colour and --gray is not given, else 'default'" if default is None else f"{default!r}"
    p.add_argument("--model", default=default, help="'default' (embedded, 32×32 grayscale), 'photo' (embedded, 32×32 RGB), a checkpoint "
                   f"(.pt/.safetensors) or a diffusers folder (default: {chosen})")  # fmt: skip
    p.add_argument("--config", help="model preset name (e.g. 256x256_diffusion_uncond; fashion32 is the embedded model's) or JSON config "
                   "file, when the layout cannot be inferred (default: the JSON beside a .safetensors file, else inferred)")  # fmt: skip


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--device, --backend, --precision, --channels-last."""
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default: %(default)s)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="how the steps run: auto (measure the others at warm-up, keep "
                   "the fastest, cache the choice), eager, compile (torch.compile of the step), cudagraph (CUDA only) (default: %(default)s)")  # fmt: skip
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help="network precision; x̂, h, h† and the update stay "
                   "float32; auto: the fastest the hardware computes natively (never an emulated bf16) (default: %(default)s)")  # fmt: skip
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="run the network in NHWC layout (default: measured with auto, else NCHW)")  # fmt: skip
    p.add_argument("--autotune-budget", type=float, metavar="SECONDS", help="seconds auto may spend measuring per task and batch size; "
                   "0 takes eager fp32 without measuring (default: $PGDM_AUTOTUNE_BUDGET_S, else 600)")  # fmt: skip


def add_canvas_options(p: argparse.ArgumentParser) -> None:
    """--strategy, --tile, --overlap: how a fixed-size model covers an image of another size."""
    p.add_argument("--strategy", choices=("auto", "whole", "tiles"), default="auto", help="how a fixed-size model covers an image of "
                   "another size: overlapping model-sized tiles, or the whole image at once (docs/large-images.md; default: %(default)s, "
                   "tiles for a model trained at one size)")  # fmt: skip
    p.add_argument("--tile", type=int, help="tile side in pixels for --strategy tiles (default: the model's size)")
    p.add_argument("--overlap", type=int, help="pixels neighbouring tiles share (default: a quarter of the tile)")


def canvas_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. 480x640) → (H, W), both ≥ 1; argparse ``type=``."""
    h, sep, w = text.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) >= 1 and int(w) >= 1):
        raise argparse.ArgumentTypeError(f"expected HxW with two positive integers (e.g. 480x640), got {text!r}")
    return int(h), int(w)
