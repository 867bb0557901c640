"""pgdm.load_model: .pt / safetensors round trips, config resolution, safety and error messages."""
import json
import pickle

import pytest
import torch

from model_fixtures import FIXTURE_DIR, fixture_state_dict, read_fixture
from pgdm import schedules
from pgdm.denoiser import Denoiser
from pgdm.models import ADMUNet, ModelConfig, convert_checkpoint, load_model, read_checkpoint
from pgdm.models import loading

NAME = "s32_cond_sigma_ss_rud"  # class-conditional, learned sigma
UNCOND = "s32_uncond_eps_add_conv"


def _fixture_config(name=NAME):
    return read_fixture(name)[1]["config"]


@pytest.fixture
def checkpoint(tmp_path):
    """The fixture's weights as a guided-diffusion style .pt (a bare state dict)."""
    path = tmp_path / "model.pt"
    torch.save(fixture_state_dict(NAME), path)
    return path


def _eps(den: Denoiser, name=NAME):
    tensors, _ = read_fixture(name)
    with torch.no_grad():
        return den(tensors["input.x"], tensors["input.t"], tensors.get("input.y"))


def _assert_reference(den: Denoiser, name=NAME):
    tensors, _ = read_fixture(name)
    assert (_eps(den, name) - tensors["output.fp32"][:, :3]).abs().max() <= 1e-5


def test_pt_with_create_model_kwargs(checkpoint):
    den = load_model(checkpoint, config=_fixture_config())
    assert isinstance(den, Denoiser) and isinstance(den.net, ADMUNet)
    assert (den.learn_sigma, den.class_cond, den.image_size, den.channels) == (True, True, 32, 3)
    assert torch.equal(den.alphas_cumprod, schedules.linear(1000))
    assert not den.training and not any(p.requires_grad for p in den.parameters())
    _assert_reference(den)


def test_pt_with_json_config_form(checkpoint):
    config = {"config": _fixture_config(), "diffusion": {"noise_schedule": "cosine", "diffusion_steps": 500}}
    den = load_model(checkpoint, config=config)
    assert torch.equal(den.alphas_cumprod, schedules.cosine(500))
    _assert_reference(den)


def test_data_parallel_prefix_is_removed(tmp_path):
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in fixture_state_dict(NAME).items()}, path)
    assert read_checkpoint(path).keys() == fixture_state_dict(NAME).keys()


def test_convert_checkpoint_round_trip(checkpoint, tmp_path):
    dst = tmp_path / "converted.safetensors"
    config = convert_checkpoint(checkpoint, dst, config=_fixture_config())
    sidecar = json.loads(dst.with_suffix(".json").read_text())
    assert sidecar["architecture"] == "adm" and sidecar["config"] == _fixture_config()
    assert ModelConfig.from_dict(sidecar) == config
    den = load_model(dst)  # config from the JSON beside it
    assert torch.equal(_eps(den), _eps(load_model(checkpoint, config=_fixture_config())))
    _assert_reference(den)


def test_safetensors_fixture_with_prefixed_keys():
    _assert_reference(load_model(FIXTURE_DIR / f"{UNCOND}.safetensors"), UNCOND)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_and_device(checkpoint, dtype):
    den = load_model(checkpoint, config=_fixture_config(), device="cpu", dtype=dtype)
    assert den.net.input_blocks[0][0].weight.dtype == dtype
    assert den.net.time_embed[0].weight.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert den.alphas_cumprod.dtype == torch.float64


def test_default_model(monkeypatch, checkpoint, tmp_path):
    monkeypatch.setattr(loading, "DEFAULT_MODEL", tmp_path / "default" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="default model is not installed"):
        load_model("default")
    (tmp_path / "default").mkdir()
    convert_checkpoint(checkpoint, loading.DEFAULT_MODEL, config=_fixture_config())
    _assert_reference(load_model("default"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, how):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"time_embed.0.weight": Payload()}, path)
    else:
        path.write_bytes(pickle.dumps({"time_embed.0.weight": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load .*it holds Python objects or code that a safe load does not run") as err:
        load_model(path, config="ffhq_10m")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_non_state_dict_checkpoint(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([fixture_state_dict(NAME), {"step": 3}], path)
    with pytest.raises(ValueError, match="does not hold a state dict .* but a list"):
        load_model(path, config=_fixture_config())


def _save_modified(tmp_path, change):
    state_dict = dict(fixture_state_dict(NAME))
    change(state_dict)
    path = tmp_path / "bad.pt"
    torch.save(state_dict, path)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop("label_emb.weight"), r"missing key 'label_emb.weight' \(expected shape \(1000, 128\); 1 key\(s\) missing\)"),
        (lambda sd: sd.update(extra=torch.zeros(2)), r"unexpected key 'extra' with shape \(2,\)"),
        (lambda sd: sd.update({"out.2.weight": torch.zeros(3, 32, 3, 3)}), r"key 'out.2.weight' has shape \(3, 32, 3, 3\), expected \(6, 32, 3, 3\)"),
    ],
)
def test_layout_errors_name_key_and_expected_shape(tmp_path, change, message):
    with pytest.raises(ValueError, match=message) as err:
        load_model(_save_modified(tmp_path, change), config=_fixture_config())
    assert "\n" not in str(err.value)


def test_unknown_layout_needs_config(checkpoint):
    with pytest.raises(ValueError, match=r"matches no published adm layout \(closest preset '.*': .*\); give its config: --config PRESET"):
        load_model(checkpoint)


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown model config 'imagenet'; give a preset \(.*fashion32.*\) or a JSON file"):
        load_model(FIXTURE_DIR / f"{NAME}.safetensors", config="imagenet")
    with pytest.raises(ValueError, match="unknown ADM config key 'num_chanels'"):
        ModelConfig.from_dict({"num_chanels": 32, "num_res_blocks": 1, "image_size": 32})
    with pytest.raises(ValueError, match="unknown architecture 'unet'"):
        ModelConfig.from_dict({"architecture": "unet", "config": {}})
    with pytest.raises(ValueError, match="no default channel_mult for image size 32"):
        ModelConfig("adm", {"num_channels": 32, "num_res_blocks": 1, "image_size": 32}).build()
    with pytest.raises(ValueError, match="unsupported model dtype"):
        load_model(FIXTURE_DIR / f"{NAME}.safetensors", dtype=torch.int8)


def test_missing_file_and_super_resolution(checkpoint):
    with pytest.raises(FileNotFoundError, match=r"no such model file or folder: 'ffhq_10m'; 'ffhq_10m' is a config preset: give the checkpoint's path and --config ffhq_10m"):
        load_model("ffhq_10m")
    with pytest.raises(ValueError, match="64_256_upsampler is a super-resolution model"):
        load_model(checkpoint, config="64_256_upsampler")
