"""Every published model's preset builds (on the meta device) exactly the reference's state-dict layout."""
import pytest
import torch

from model_fixtures import MANIFESTS, describe_blocks, read_manifest
from pgdm.models import PRESETS, ModelConfig, infer_config


def _meta_build(config):
    with torch.device("meta"):
        return config.build()


def test_every_manifest_has_a_preset():
    assert sorted(PRESETS) == MANIFESTS


@pytest.mark.parametrize("name", MANIFESTS)
def test_preset_matches_manifest_config(name):
    m, preset = read_manifest(name), PRESETS[name]
    if preset.architecture == "adm":
        assert dict(preset.kwargs) == m["config"]
        assert (preset.noise_schedule, preset.diffusion_steps) == (m["diffusion"]["noise_schedule"], m["diffusion"]["diffusion_steps"])
        assert ModelConfig.from_dict(m).behaviour_key() == preset.behaviour_key()
    else:
        model, data, diffusion = m["config"]["model"], m["config"]["data"], m["config"]["diffusion"]
        assert {k: preset.kwargs[k] for k in model if k in preset.kwargs} == {k: v for k, v in model.items() if k in preset.kwargs}
        assert (preset.kwargs["resolution"], preset.channels) == (data["image_size"], data["channels"])
        assert (preset.noise_schedule, preset.diffusion_steps) == (diffusion["beta_schedule"], diffusion["num_diffusion_timesteps"])
        assert not preset.learn_sigma and not preset.class_cond


@pytest.mark.parametrize("name", MANIFESTS)
def test_state_dict_layout_matches_manifest(name):
    m = read_manifest(name)
    net = _meta_build(PRESETS[name])
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == m["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == m["num_params"]
    assert len(list(net.buffers())) == 0


@pytest.mark.parametrize("name", [n for n in MANIFESTS if PRESETS[n].architecture == "adm"])
def test_structure_and_fp16_conversion_match_manifest(name):
    m = read_manifest(name)
    net = _meta_build(PRESETS[name])
    assert describe_blocks(net) == m["blocks"]  # head counts and head order, which shapes cannot show
    net.to_precision(torch.float16)
    assert [k for k, v in net.state_dict().items() if v.dtype == torch.float16] == m["keys_converted_by_convert_to_fp16"]


@pytest.mark.parametrize("name", ["ffhq_10m", "64_256_upsampler"])
def test_block_output_shapes_match_manifest(name):
    m, preset = read_manifest(name), PRESETS[name]
    shapes = {}
    with torch.device("meta"):
        net = preset.build()
        for block in m["block_output_shapes_CHW"]:
            net.get_submodule(block).register_forward_hook(lambda _m, _i, out, block=block: shapes.update({block: list(out.shape[1:])}))
        x, t = torch.empty(1, 3, preset.image_size, preset.image_size), torch.zeros(1, dtype=torch.long)
        if preset.is_super_resolution:
            net(x, t, torch.empty(1, 3, 64, 64), torch.zeros(1, dtype=torch.long))
        else:
            net(x, t)
    assert shapes == m["block_output_shapes_CHW"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_config_inferred_from_layout(name):
    state_dict = {k: torch.empty(shape, device="meta") for k, shape in read_manifest(name)["state_dict"]}
    # lsun_256 shares 256x256_diffusion_uncond's layout and differs only in dropout.
    assert infer_config(state_dict).behaviour_key() == PRESETS[name].behaviour_key()
