"""Helpers shared by the engine and export tests: a tiny ADM UNet (random weights) on 16×16 grayscale images."""
import copy
import os

import torch

from pgdm import Denoiser, schedules
from pgdm.models import ADMUNet


def tiny_denoiser(num_classes=None, seed=0) -> Denoiser:
    """ADMUNet(in=1, mc=32, mult (1, 2), 1 res block, attention at ds 2) wrapped as a 16×16 Denoiser, eval mode."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = ADMUNet(
        in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1, attention_ds=(2,), channel_mult=(1, 2),
        num_heads=2, use_scale_shift_norm=True, resblock_updown=True, num_classes=num_classes,
    )  # fmt: skip
    torch.random.set_rng_state(gen_state)
    return Denoiser(net, schedules.linear(1000), channels=1, image_size=16, class_cond=num_classes is not None).eval()


def float64_copy(den: Denoiser) -> Denoiser:
    return copy.deepcopy(den).double()


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
