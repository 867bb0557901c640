"""``pgdm train --dataset photos``: a two-step run of a tiny RGB network, resumed, exported and loaded."""
import json

import pytest
import torch

import pgdm
from pgdm.entrypoints.train import PHOTO_NETWORK, TrainConfig, export_ema, train


TINY = {**PHOTO_NETWORK, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "2", "num_heads": 1}


def test_two_photo_steps_resume_export_and_load(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), dataset="photos", image_size=16, steps=1, batch_size=2, warmup=1,
                      checkpoint_every=1, network=dict(TINY))  # fmt: skip
    ckpt = train(cfg, progress=False)
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), progress=False)  # resumes from step 1
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 2 and len(state["losses"]) == 2
    with pytest.raises(ValueError, match="other settings \\(batch_size\\)"):
        train(TrainConfig(**{**cfg.__dict__, "steps": 3, "batch_size": 4}), progress=False)
    dst = export_ema(ckpt, tmp_path / "photo16.safetensors")
    meta = json.loads(dst.with_suffix(".json").read_text())
    assert meta["name"] == "photo32" and meta["config"]["channels"] == 3
    assert "held out: chelsea, flower" in meta["training"]["dataset"]
    den = pgdm.load_model(dst)
    assert (den.channels, den.image_size) == (3, 16)


def test_checkpoints_without_a_dataset_setting_resume_as_fashion_mnist():
    saved = {k: v for k, v in TrainConfig().__dict__.items() if k != "dataset"}  # a checkpoint's config from before
    assert TrainConfig(**saved).dataset == "fashion-mnist"
