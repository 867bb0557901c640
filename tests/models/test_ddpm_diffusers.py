"""The DDPM UNet against diffusers' UNet2DModel on the same random weights, and diffusers folders."""
import json
import re

import pytest
import torch

from model_fixtures import randomize_
from pgdm import schedules
from pgdm.models import DDPMUNet, DiffusersUNet, load_model

import diffusers  # noqa: E402

SMALL = dict(ch=32, out_ch=3, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16)


def _ddpm_to_diffusers(state_dict, levels):
    """Rename DDPMUNet keys to diffusers' UNet2DModel keys (attention 1×1 convs become Linear weights)."""
    out = {}
    for key, v in state_dict.items():
        k = key.replace("temb.dense.0", "time_embedding.linear_1").replace("temb.dense.1", "time_embedding.linear_2")
        k = re.sub(r"^up\.(\d+)\.", lambda m: f"up_blocks.{levels - 1 - int(m.group(1))}.", k)
        k = re.sub(r"^down\.(\d+)\.", r"down_blocks.\1.", k)
        for old, new in [(".block.", ".resnets."), (".attn.", ".attentions."), (".downsample.", ".downsamplers.0."),
                         (".upsample.", ".upsamplers.0."), ("mid.block_1.", "mid_block.resnets.0."),
                         ("mid.block_2.", "mid_block.resnets.1."), ("mid.attn_1.", "mid_block.attentions.0."),
                         ("temb_proj", "time_emb_proj"), ("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out")]:
            k = k.replace(old, new)
        if ".attentions." in k:
            for old, new in [(".norm.", ".group_norm."), (".q.", ".to_q."), (".k.", ".to_k."), (".v.", ".to_v."), (".proj_out.", ".to_out.0.")]:
                k = k.replace(old, new)
            v = v[:, :, 0, 0] if v.ndim == 4 else v
        out[k] = v
    return out


def _diffusers_unet(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, **_):
    """diffusers' UNet2DModel with the DDPM layout (google/ddpm-* settings)."""
    levels = [resolution // 2**i in attn_resolutions for i in range(len(ch_mult))]
    return diffusers.UNet2DModel(
        sample_size=resolution,
        block_out_channels=tuple(ch * m for m in ch_mult),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in levels),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
        layers_per_block=num_res_blocks,
        attention_head_dim=None,
        norm_eps=1e-6,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
    ).eval()


@pytest.fixture(scope="module")
def pair():
    net = randomize_(DDPMUNet(**SMALL)).eval()
    unet = _diffusers_unet(**SMALL)
    unet.load_state_dict(_ddpm_to_diffusers(net.state_dict(), len(SMALL["ch_mult"])), strict=True)
    return net, unet


def test_ddpm_unet_matches_diffusers(pair):
    net, unet = pair
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 500, 999])
    with torch.no_grad():
        ours, theirs = net(x, t), unet(x, t).sample
    assert theirs.abs().max() > 0.5
    assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_ddpm_low_precision_body(pair, dtype, tol):
    net, _ = pair
    low = randomize_(DDPMUNet(**SMALL)).eval().to_precision(dtype)
    assert low.conv_in.weight.dtype == dtype and low.conv_out.weight.dtype == low.norm_out.weight.dtype == torch.float32
    low.load_state_dict(net.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        ref, out = net(x, t), low(x, t)
    assert out.dtype == torch.float32
    assert (out - ref).norm() / ref.norm() <= tol


@pytest.mark.parametrize("layout", ["pipeline", "unet"])
def test_diffusers_folder_round_trip(pair, tmp_path, layout):
    _, unet = pair
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(tmp_path / "scheduler")
    den = load_model(tmp_path if layout == "pipeline" else tmp_path / "unet")
    assert isinstance(den.net, DiffusersUNet) and not den.learn_sigma and not den.class_cond
    assert (den.image_size, den.channels) == (16, 3)
    assert torch.allclose(den.alphas_cumprod, schedules.linear(1000), rtol=0, atol=1e-12)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(den(x, t), unet(x, t).sample)


def test_diffusers_cosine_schedule_and_refusals(pair, tmp_path):
    _, unet = pair
    unet.save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    scheduler = tmp_path / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 500}))
    assert torch.equal(load_model(tmp_path).alphas_cumprod, schedules.cosine(500))
    scheduler.write_text(json.dumps({"prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="ε-prediction"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="own config"):
        load_model(tmp_path, config="ffhq_10m")
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        load_model(tmp_path / "scheduler")
