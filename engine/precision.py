"""Network precision and memory layout for the engine: fp32 | tf32 | bf16 | fp16, channels_last, frozen weights.

Only the network runs in low precision. The denoiser's output is cast back to the sample's dtype
(float32), so x̂, the operator h/h†, the guidance vector and the update stay float32 (the VJP's
cotangent is cast to the network output dtype by ``pigdm_step`` and the input gradient comes back in
the sample's dtype through the cast).
"""
from __future__ import annotations

import contextlib
import copy
import platform
from typing import Iterator

import torch
from torch import nn

from pgdm.denoiser import Denoiser

from .options import PRECISIONS

__all__ = ["PRECISIONS", "network_dtype", "bf16_emulated_on_cpu", "prepare_denoiser", "precision_context", "NetworkAdapter"]



def network_dtype(precision: str) -> torch.dtype:
    """The dtype the network body computes in for ``precision`` (a key of :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def bf16_emulated_on_cpu() -> bool:
    """True when this is an x86 CPU with neither AVX512-BF16 nor AMX: oneDNN then emulates bfloat16 convolutions and
    matmuls, and a bf16 network runs slower than float32 (a 2-core Xeon without either, 2 threads: 0.05 bf16 vs
    0.25 fp32 TFLOP/s on a 1024³ matmul, default model forward 219 vs 96 ms at batch 16; benchmarks/RESULTS.md).
    Other architectures (e.g. Arm CPUs with BF16 instructions) are not judged: False."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    cpu = torch.cpu
    return not (cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


class NetworkAdapter(nn.Module):
    """Runs a network in the engine's layout and precision; returns the output in the input's dtype.

    ``channels_last``: the input is made channels-last (the weights already are), so convolutions take
    the NHWC kernels. ``autocast_dtype``: networks without ``to_precision`` run under
    ``torch.autocast(dtype)``; networks with it were cast by the caller and need nothing here.
    forward(x, *args): x: (B, C, H, W) float; args as the wrapped network takes them.
    """

    def __init__(self, net: nn.Module, *, channels_last: bool, autocast_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        h = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.autocast_dtype is None:
            return self.net(h, *args).to(x.dtype)
        with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
            out = self.net(h, *args)
        return out.to(x.dtype)


def prepare_denoiser(denoiser: Denoiser, precision: str, *, channels_last: bool, copy_model: bool) -> Denoiser:
    """The denoiser the engine runs: eval mode, weights frozen, network in ``precision`` and layout.

    ``copy_model=True`` deep-copies the denoiser first, so the caller's model is untouched (costs one
    extra copy of the weights). ``copy_model=False`` freezes (``requires_grad_(False)``) and, for
    bf16/fp16/channels_last, casts the caller's network **in place**; the returned denoiser is a new
    wrapper around it either way. Networks with ``to_precision`` (ADM, DDPM, diffusers UNets) take
    the guided-diffusion recipe (body convolutions in low precision, norms/embeddings/head float32);
    others run under autocast.
    """
    dtype = network_dtype(precision)
    if copy_model:
        den = copy.deepcopy(denoiser)
    else:  # a new wrapper sharing the network: the caller's Denoiser keeps its own .net
        den = copy.copy(denoiser)
        den._modules = dict(denoiser._modules)
        den._buffers = dict(denoiser._buffers)
        den._parameters = dict(denoiser._parameters)
    den.eval().requires_grad_(False)
    net = den.net
    autocast_dtype = None
    if dtype != torch.float32:
        if hasattr(net, "to_precision"):
            net.to_precision(dtype)
        else:
            autocast_dtype = dtype
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if channels_last or autocast_dtype is not None:
        den.net = NetworkAdapter(net, channels_last=channels_last, autocast_dtype=autocast_dtype)
    den.requires_grad_(False)
    return den


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Set CUDA's float32 math for the duration: TF32 for ``tf32``, strict IEEE float32 otherwise.

    PyTorch's default lets cuDNN convolutions use TF32 even in "fp32"; inside the engine ``fp32``
    means IEEE float32 and ``tf32`` enables TF32 for both matmuls and convolutions. The previous
    settings are restored on exit. A no-op on CPU (``tf32`` computes in float32 there).
    Uses the legacy flag API only (mixing it with ``fp32_precision`` makes PyTorch raise). ``"auto"`` changes
    nothing (the engine chosen by measuring sets its own around each step).
    """
    if precision != "auto":
        network_dtype(precision)  # a one-line ValueError for unknown names
    if precision == "auto" or device.type != "cuda":
        yield
        return
    prev_matmul = torch.get_float32_matmul_precision()
    prev_cudnn = torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev_matmul)
        torch.backends.cudnn.allow_tf32 = prev_cudnn
