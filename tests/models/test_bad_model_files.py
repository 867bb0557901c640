"""Corrupt, truncated and malformed model files: one-line ValueErrors naming the file, nothing executed."""
import json
import pickle
import random
import shutil

import pytest
import torch

from model_fixtures import FIXTURE_DIR, fixture_state_dict
from pgdm.models import convert_checkpoint, load_model, read_checkpoint

NAME = "s32_uncond_eps_add_conv"
SAFETENSORS = FIXTURE_DIR / f"{NAME}.safetensors"


def _one_line_error(path, match, **kwargs):
    with pytest.raises(ValueError, match=match) as err:
        load_model(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "weights_only=False" not in message
    return message


@pytest.fixture
def pt_bytes(tmp_path):
    path = tmp_path / "good.pt"
    torch.save(fixture_state_dict(NAME), path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "name, make",
    [
        ("truncated.pt", lambda b: b[: len(b) // 2]),
        ("header_only.pt", lambda b: b[:64]),
        ("empty.pt", lambda b: b""),
        # random bytes: seeds whose weights-only unpickling fails with UnpicklingError, IndexError, KeyError, UnicodeDecodeError
        *((f"random{seed}.pt", lambda b, seed=seed: random.Random(seed).randbytes(4096)) for seed in (0, 2, 20, 195)),
        ("garbled.pt", lambda b: b[:100] + bytes(300) + b[400:]),
    ],
)
def test_corrupt_pt_is_not_a_valid_checkpoint(tmp_path, pt_bytes, name, make):
    path = tmp_path / name
    path.write_bytes(make(pt_bytes))
    message = _one_line_error(path, r"is not a valid PyTorch checkpoint \(", config="ffhq_10m")
    assert "refusing" not in message and "objects or code" not in message  # not a pickle of code: just not a checkpoint


def test_truncated_legacy_pt(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(fixture_state_dict(NAME), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-1000])
    _one_line_error(path, r"is not a valid PyTorch checkpoint \(truncated or corrupt: ", config="ffhq_10m")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_needing_code_is_refused_with_safe_advice(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "objects.pt"
    path.write_bytes(pickle.dumps({"w": Payload()}, protocol=2))  # torch.save's protocol
    message = _one_line_error(path, r"refusing to load .*: it holds Python objects or code that a safe load does not run")
    assert "state_dict()" in message and "pgdm convert" in message
    assert "add_safe_globals" not in message and "Please use" not in message
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        convert_checkpoint(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("truncated.safetensors", lambda b: b[: len(b) // 2], "incomplete metadata"),
        ("header.safetensors", lambda b: b[:5], "invalid header length|header too small"),
        ("empty.safetensors", lambda b: b"", "header too small"),
        ("random.safetensors", lambda b: b"\xff" * 4096, "header too large"),
    ],
)
def test_corrupt_safetensors(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make(SAFETENSORS.read_bytes()))
    shutil.copy(SAFETENSORS.with_suffix(".json"), path.with_suffix(".json"))
    _one_line_error(path, rf"is not a valid safetensors file \(truncated or corrupt: ({reason})")


@pytest.mark.parametrize(
    "sidecar, match",
    [
        ("[1, 2]", r"expected the model config .* as a JSON object, got a JSON list"),
        ("{not json", r"invalid JSON \(Expecting property name .* at line 1 column 2\)"),
        ("\"adm\"", r"got a JSON str"),
        ('{"config": {"num_chanels": 8}}', r"not a valid model config \(unknown ADM config key 'num_chanels'"),
        ('{"state_dict_prefix": 3}', r"state_dict_prefix must be a string"),
    ],
)
def test_bad_sidecar_json_names_the_file(tmp_path, sidecar, match):
    path = tmp_path / "model.safetensors"
    shutil.copy(SAFETENSORS, path)
    path.with_suffix(".json").write_text(sidecar)
    with pytest.raises(ValueError, match=match) as err:
        load_model(path)
    assert str(path.with_suffix(".json")) in str(err.value) and "\n" not in str(err.value)


def _unet_config(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "out_channels": 1}))
    return folder


def test_diffusers_folder_without_weights(tmp_path):
    folder = _unet_config(tmp_path / "unet")
    _one_line_error(folder, r"has no weights: expected diffusion_pytorch_model.safetensors")


def test_diffusers_folder_with_corrupt_weights(tmp_path):
    pytest.importorskip("diffusers")
    folder = _unet_config(tmp_path / "unet")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 16)
    _one_line_error(folder, r"diffusers could not load the model \(")


@pytest.mark.parametrize("text, match", [("[1]", "got a JSON list"), ("{", "invalid JSON")])
def test_diffusers_config_json_errors_name_the_file(tmp_path, text, match):
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        load_model(folder)
    assert str(folder / "unet" / "config.json") in str(err.value)


def test_read_checkpoint_still_reads_good_files(tmp_path, pt_bytes):
    path = tmp_path / "ok.pt"
    path.write_bytes(pt_bytes)
    assert read_checkpoint(path).keys() == fixture_state_dict(NAME).keys()


def test_integer_weights_in_safetensors_are_refused_in_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "ints.safetensors"
    save_file({k: v.to(torch.int32) for k, v in load_file(SAFETENSORS).items()}, path)
    shutil.copy(SAFETENSORS.with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ValueError, match=r"holds int32 values; weights must be floating point") as err:
        load_model(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image_size", "big", r"config key 'image_size' must be an integer, got 'big'"),
        ("num_channels", 32.5, r"config key 'num_channels' must be an integer"),
        ("learn_sigma", "yes", r"config key 'learn_sigma' must be true or false"),
        ("attention_resolutions", {"a": 1}, r"config key 'attention_resolutions' must be a list of integers"),
    ],
)
def test_sidecar_fields_of_the_wrong_type_are_one_line_errors(tmp_path, field, value, message):
    path = tmp_path / "model.safetensors"
    shutil.copy(SAFETENSORS, path)
    meta = json.loads(SAFETENSORS.with_suffix(".json").read_text())
    kwargs = meta["config"] if "config" in meta else meta
    kwargs[field] = value
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value) and str(path.with_suffix(".json")) in str(err.value)


def test_default_weights_as_a_bare_pt_load_with_a_config_name_or_file(tmp_path):
    from pgdm.models.loading import DEFAULT_MODEL
    from safetensors.torch import load_file

    pt = tmp_path / "weights.pt"
    torch.save(load_file(DEFAULT_MODEL), pt)
    with pytest.raises(ValueError, match=r"--config PRESET .*fashion32.* or --config FILE\.json") as err:
        load_model(pt)
    assert "\n" not in str(err.value)
    assert load_model(pt, config="fashion32").image_size == 32
    assert load_model(pt, config=str(DEFAULT_MODEL.with_suffix(".json"))).channels == 1
