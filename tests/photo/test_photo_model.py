"""The embedded photo model: its files, its shape, a short restore of a held-out crop, the data it trains on,
and the command line choosing it for colour inputs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import pgdm
from pgdm.entrypoints.cli import PHOTO_DEMO_IMAGES, main
from pgdm.data import PHOTO_HELD_OUT, PHOTO_TRAIN
from pgdm.io import read_image
from pgdm.metrics import psnr
from pgdm.models import PHOTO_MODEL
from pgdm.ops import GaussianNoise, parse
from pgdm.entrypoints.restore_job import embedded_model_for


@pytest.fixture(scope="module")
def photo():
    return pgdm.load_model("photo")


def test_photo_model_files_and_shape(photo):
    assert PHOTO_MODEL.stat().st_size <= 25 * 2**20
    meta = json.loads(PHOTO_MODEL.with_suffix(".json").read_text())
    assert meta["config"]["channels"] == 3 and meta["training"]["steps"] > 0
    assert (photo.channels, photo.image_size) == (3, 32)
    assert sum(p.numel() for p in photo.net.parameters()) < 5_000_000
    x = torch.zeros(2, 3, 32, 32)
    eps = photo.net(x, torch.tensor([10, 900]))
    assert eps.shape == (2, 3, 32, 32) and eps.isfinite().all()


def test_held_out_photos_are_not_trained_on():
    assert not set(PHOTO_HELD_OUT) & set(PHOTO_TRAIN)
    assert {p.stem.split("_")[0] for p in PHOTO_DEMO_IMAGES.glob("*.png")} <= set(PHOTO_HELD_OUT)


@pytest.mark.parametrize("spec, sigma_y", [("denoise", 0.1), ("inpaint-random0.3", 0.0)])
def test_short_restore_beats_the_pseudo_inverse_on_held_out_crops(photo, spec, sigma_y):
    x = torch.cat([read_image(PHOTO_DEMO_IMAGES / f"{n}.png", 3) for n in ("chelsea_2", "flower_5")])  # (2, 3, 32, 32)
    op = parse(spec, (3, 32, 32), seed=0)
    y = op(x)
    if sigma_y:
        y = GaussianNoise(sigma_y, seed=0)(y)
    restored = pgdm.Restorer(photo, steps=10).restore(y, op, sigma_y=sigma_y, seed=0)
    assert restored.shape == x.shape
    assert (psnr(restored, x) > psnr(op.pinv(y).clamp(-1, 1), x) + 1.0).all()


def test_photo_crops_batches():
    from pgdm.data import PhotoCrops

    crops = PhotoCrops(("chelsea",), size=16, max_downscale=2.0, scales=2)
    x = crops.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32
    assert -1 <= x.min() and x.max() <= 1 and x.std() > 0
    assert torch.equal(x, crops.sample(5, torch.Generator().manual_seed(0)))


def test_colour_inputs_choose_the_photo_model(tmp_path):
    colour, gray = tmp_path / "colour.png", tmp_path / "gray.png"
    Image.open(PHOTO_DEMO_IMAGES / "flower_5.png").save(colour)
    Image.open(PHOTO_DEMO_IMAGES / "flower_5.png").convert("L").save(gray)
    assert embedded_model_for([gray]) == "default"
    assert embedded_model_for([gray, colour]) == "photo"
    assert embedded_model_for([colour], gray=True) == "default"


def test_cli_restores_a_colour_png_without_flags(tmp_path):
    src = tmp_path / "in" / "flower.png"
    src.parent.mkdir()
    Image.open(PHOTO_DEMO_IMAGES / "flower_5.png").save(src)
    assert main(["restore", "inpaint-random0.3", str(src), "-o", str(tmp_path / "out"), "--simulate", "--steps", "2", "--quiet"]) == 0
    out = Image.open(tmp_path / "out" / "flower.png")
    assert out.mode == "RGB" and out.size == (32, 32)
    assert np.asarray(out).std(axis=2).mean() > 1  # colour, not gray repeated
