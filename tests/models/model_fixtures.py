"""Shared data and helpers for the model tests: the ADM conformance fixtures and manifests."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from pgdm.models.adm import ADMUNet, AttentionBlock, Downsample, ResBlock, Upsample

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "adm"
CONFORMANCE = ["s32_cond_sigma_ss_rud", "s32_uncond_eps_add_conv", "s64_uncond_sigma_ss_conv", "s64_cond_eps_add_rud"]
MANIFESTS = sorted(p.stem.removeprefix("manifest_") for p in FIXTURE_DIR.glob("manifest_*.json"))


@functools.cache
def read_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON sidecar) of a conformance fixture."""
    return load_file(FIXTURE_DIR / f"{name}.safetensors"), json.loads((FIXTURE_DIR / f"{name}.json").read_text())


def fixture_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The fixture's model state dict, prefix removed."""
    tensors, _ = read_fixture(name)
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


@functools.cache
def read_manifest(name: str) -> dict[str, Any]:
    return json.loads((FIXTURE_DIR / f"manifest_{name}.json").read_text())


def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """The fixtures' initialisation: GroupNorm 1+0.2·N / 0.2·N, weights N/√fan_in, biases 0.1·N, embeddings N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            for pname, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                if isinstance(module, nn.GroupNorm):
                    p.copy_(1 + 0.2 * noise if pname == "weight" else 0.2 * noise)
                elif isinstance(module, nn.Embedding):
                    p.copy_(noise)
                else:
                    p.copy_(noise / p[0].numel() ** 0.5 if pname == "weight" else 0.1 * noise)
    return net


def describe_blocks(net: ADMUNet) -> dict[str, list[dict[str, Any]]]:
    """The per-block structure summary in the fixtures' ``blocks`` format."""

    def describe(m: nn.Module) -> dict[str, Any]:
        if isinstance(m, nn.Conv2d):
            return {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels, "k": m.kernel_size[0]}
        if isinstance(m, ResBlock):
            cin, cout = m.in_layers[2].in_channels, m.in_layers[2].out_channels
            skip = "identity" if isinstance(m.skip_connection, nn.Identity) else "conv1x1"
            return {"type": "ResBlock", "in": cin, "out": cout, "updown": m.resample, "skip": skip, "scale_shift_norm": m.use_scale_shift_norm}
        if isinstance(m, AttentionBlock):
            c = m.qkv.in_channels
            order = "new(QKVAttention)" if m.use_new_attention_order else "legacy(QKVAttentionLegacy)"
            return {"type": "AttentionBlock", "channels": c, "num_heads": m.num_heads, "head_channels": c // m.num_heads, "order": order}
        if isinstance(m, (Downsample, Upsample)):
            conv = m.op if isinstance(m, Downsample) else m.conv
            return {"type": type(m).__name__, "channels": conv.in_channels, "use_conv": True}
        raise AssertionError(f"unexpected block {type(m).__name__}")

    blocks = {f"input_blocks.{i}": [describe(m) for m in b] for i, b in enumerate(net.input_blocks)}
    blocks["middle_block"] = [describe(m) for m in net.middle_block]
    blocks |= {f"output_blocks.{i}": [describe(m) for m in b] for i, b in enumerate(net.output_blocks)}
    return blocks
