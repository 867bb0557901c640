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


def test_demo_photos_restores_the_whole_photos_with_a_labelled_grid(tmp_path, monkeypatch):
    """``pgdm demo --photos`` on the held-out photos, whole: here 48×72 copies of the bundled 96×144 ones and one
    step (the demo itself runs 20); every task restores each photo at its own size, and grid.png holds one row
    per task and photo under a left column of row labels."""
    import pgdm.entrypoints.cli as cli

    assert [Image.open(p).size for p in cli.PHOTO_DEMO_WHOLE] == [(144, 96)] * len(PHOTO_HELD_OUT)
    small = []
    for path in cli.PHOTO_DEMO_WHOLE:
        small.append(tmp_path / path.name)
        Image.open(path).resize((72, 48), Image.Resampling.BICUBIC).save(small[-1])
    monkeypatch.setattr(cli, "PHOTO_DEMO_WHOLE", tuple(small))
    assert main(["demo", "--photos", "-o", str(tmp_path / "demo"), "--steps", "1", "--quiet"]) == 0
    for task, _, _ in cli.PHOTO_DEMO_TASKS:
        for path in small:
            out = Image.open(tmp_path / "demo" / task / path.name)
            assert out.mode == "RGB" and out.size == (72, 48)
        assert len(json.loads((tmp_path / "demo" / task / "metrics.json").read_text())) == len(small)
    grid = Image.open(tmp_path / "demo" / "grid.png")
    rows = len(cli.PHOTO_DEMO_TASKS) * len(small)
    panel = 96  # 48-pixel panels upsampled ×2 to the grid's 96-pixel minimum
    assert grid.size[1] == 18 + rows * (panel + 4) + 4
    assert grid.size[0] > 4 * (2 * 72 + 4) + 4  # four panels and the row labels' column


def test_grid_row_labels_need_one_per_row(tmp_path):
    from pgdm.grids import write_grid

    panels = [[torch.zeros(3, 8, 8)] * 2] * 3
    plain = Image.open(write_grid(panels, ["a", "b"], tmp_path / "plain.png"))
    labelled = Image.open(write_grid(panels, ["a", "b"], tmp_path / "labelled.png", row_labels=["x", "y", "long row label"]))
    assert labelled.size[1] == plain.size[1] and labelled.size[0] > plain.size[0]
    assert np.asarray(labelled)[:, : labelled.size[0] - plain.size[0]].min() < 255  # the labels are drawn
    with pytest.raises(ValueError, match="3 rows, 2 labels"):
        write_grid(panels, ["a", "b"], tmp_path / "bad.png", row_labels=["x", "y"])
