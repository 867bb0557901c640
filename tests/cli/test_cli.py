"""The ``pgdm`` command line, in-process through ``pgdm.entrypoints.cli.main``, on a tiny random-weight model and few steps.

Tests where a separate process is the point (a missing compiler, kill -9, concurrent writers) are in
test_cli_processes.py.
"""
import argparse
import json
import os
import re

import numpy as np
import pytest
import torch
from cli_helpers import SIZE, run
from PIL import Image

import pgdm
from pgdm.operators import JPEG


def test_help_everywhere():
    for cmd in ([], ["restore"], ["degrade"], ["demo"], ["train"], ["train-classifier"], ["convert"], ["export"], ["serve"]):
        proc = run(*cmd, "--help")
        assert "usage: pgdm" in proc.stdout and "example" in proc.stdout


@pytest.mark.parametrize(
    "task, extra",
    [
        ("sr4", []),
        ("inpaint-center", []),
        ("jpeg10", []),
        ("blur-uniform9", []),
        ("denoise", ["--sigma-y", "0.05"]),
        ("sr2+jpeg20", []),
        ("quant3", []),
        ("ldr", []),
    ],
)
def test_degrade_then_restore(task, extra, model, clean, tmp_path):
    run("degrade", task, clean, "-o", tmp_path / "deg", "--gray", *extra)
    files = sorted(p for p in (tmp_path / "deg").iterdir() if not p.stem.endswith("_mask"))
    assert len(files) == 3
    if "jpeg" in task:
        assert all(p.suffix == ".jpg" for p in files)
    if task == "sr4":
        assert Image.open(files[0]).size == (SIZE // 4, SIZE // 4)
    if task == "inpaint-center":
        assert (tmp_path / "deg" / "img0_mask.png").exists()
    proc = run("restore", task, tmp_path / "deg", "-o", tmp_path / "out", "--model", model, "--steps", 3, "--quiet", *extra)
    assert "restored 3 image(s)" in proc.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"img0", "img1", "img2"}
    if task in ("quant3", "ldr", "jpeg10"):  # y read back from the file is exactly the measurement
        assert all(m["consistency_rms"] < 0.2 for m in metrics.values())
    for name in metrics:
        out = Image.open(tmp_path / "out" / f"{name}.png")
        assert out.size == (SIZE, SIZE) and out.mode == "L"
        assert metrics[name]["seconds"] > 0 and np.isfinite(metrics[name]["consistency_rms"])
        assert metrics[name]["sigma_y"] == (0.05 if extra else 0.0)


def test_jpeg_degrade_writes_the_operators_coefficients(clean, tmp_path):
    run("degrade", "jpeg10", clean / "img1.png", "-o", tmp_path, "--gray")
    op, y = JPEG.from_file(tmp_path / "img1.jpg")
    x = torch.from_numpy(np.asarray(Image.open(clean / "img1.png"), dtype=np.float32))[None, None] / 127.5 - 1
    assert torch.equal(y, JPEG(10, grayscale=True)(x))
    assert torch.equal(op.qtables, JPEG(10, grayscale=True).qtables)


def test_inpaint_mask_option_overrides_task_mask(model, clean, tmp_path):
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[:, :4] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run("restore", "inpaint-center", clean / "img0.png", "-o", tmp_path / "out", "--model", model, "--steps", 2, "--mask", tmp_path / "mask.png", "--quiet")
    out = np.asarray(Image.open(tmp_path / "out" / "img0.png"), dtype=np.float64)
    src = np.asarray(Image.open(clean / "img0.png"), dtype=np.float64)
    assert np.abs(out[:, 4:] - src[:, 4:]).max() <= 2, "observed pixels are kept"


def test_inpainting_needs_a_binary_mask(model, clean, tmp_path):
    proc = run("restore", "inpaint-center", clean / "img0.png", "-o", tmp_path / "a", "--model", model, "--steps", 2, "--quiet", code=1)
    assert "inpainting needs the image's mask" in proc.stderr and "img0_mask.png" in proc.stderr
    soft = np.full((SIZE, SIZE), 255, np.uint8)
    soft[:, :4] = 128
    Image.fromarray(soft).save(tmp_path / "soft.png")
    args = ("restore", "inpaint-center", clean / "img0.png", "-o", tmp_path / "b", "--model", model, "--steps", 2, "--quiet")
    proc = run(*args, "--mask", tmp_path / "soft.png", code=1)
    assert "black (missing) and white (observed) only; found 2 gray levels" in proc.stderr
    assert not (tmp_path / "b" / "img0.png").exists()


def test_simulate_metrics_samples_and_labelled_grid(model, clean, tmp_path):
    proc = run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", model, "--steps", 3, "--simulate", "--num-samples", 2, "--grid", tmp_path / "grid.png", "--quiet")
    assert "restored 3" in proc.stdout
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"psnr", "ssim", "pinv_psnr", "pinv_ssim", "consistency_rms", "seconds", "sigma_y"} <= set(m["img0"])
    assert (tmp_path / "out" / "img0_std.png").exists()
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    tile = 96  # 16-pixel panels upsampled 6× to at least 96 pixels
    assert grid.shape == (18 + 3 * (tile + 4) + 4, 4 * (tile + 4) + 4)  # a label row, 3 images, 4 columns
    assert (grid[:18] < 128).any(), "the label row has text"
    first_y = grid[18 + 4 : 18 + 4 + tile, 4 : 4 + tile]
    assert (first_y[::6, ::6].repeat(6, 0).repeat(6, 1) == first_y).all(), "the 8×8 measurement tile is a nearest-neighbour upsampling"


def test_resume_skips_finished_outputs(model, clean, tmp_path):
    args = ("restore", "sr2", clean, "-o", tmp_path, "--model", model, "--steps", 2, "--simulate", "--quiet")
    run(*args)
    first = (tmp_path / "img1.png").read_bytes()
    (tmp_path / "img2.png").unlink()  # as if the run had been interrupted before img2
    proc = run(*args)
    assert "restored 1 image(s), skipped 2" in proc.stdout
    assert (tmp_path / "img1.png").read_bytes() == first
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"img0", "img1", "img2"}
    assert "restored 3" in run(*args, "--overwrite").stdout


def test_same_result_after_resume(model, clean, tmp_path):
    """Seeds follow the input's position, so a resumed image equals the one from an uninterrupted run."""
    base = ("restore", "sr2", clean, "--model", model, "--steps", 2, "--simulate", "--quiet")
    run(*base[:3], "-o", tmp_path / "a", *base[3:])
    run(*base[:3], "-o", tmp_path / "b", *base[3:])
    (tmp_path / "b" / "img2.png").unlink()
    run(*base[:3], "-o", tmp_path / "b", *base[3:])
    assert (tmp_path / "a" / "img2.png").read_bytes() == (tmp_path / "b" / "img2.png").read_bytes()


def test_cli_and_api_take_sigma_y_in_one_unit(model, clean, tmp_path):
    """--sigma-y 0.05 and Restorer.restore(sigma_y=0.05) are the same noise level: the same restored image."""
    run("restore", "denoise", clean / "img1.png", "-o", tmp_path / "cli", "--model", model, "--steps", 3, "--simulate", "--sigma-y", 0.05, "--seed", 4, "--quiet")
    den = pgdm.load_model(str(model))
    x = pgdm.io.read_image(clean / "img1.png", 1)
    op = pgdm.ops.Identity()
    y = pgdm.ops.GaussianNoise(0.05, seed=4)(op(x))
    assert abs(float((y - x).std()) - 0.1) < 0.03, "pixel-scale 0.05 is std 0.1 on the [-1, 1] scale"
    api = pgdm.Restorer(den, steps=3).restore(y, op, sigma_y=0.05, seed=4)
    cli = np.asarray(Image.open(tmp_path / "cli" / "img1.png"))
    assert np.array_equal(pgdm.io.to_uint8(api[0]), cli)
    other = pgdm.Restorer(den, steps=3).restore(y, op, sigma_y=0.1, seed=4)
    assert not np.array_equal(pgdm.io.to_uint8(other[0]), cli)


def test_corrupt_file_is_reported_and_batch_continues(model, clean, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in clean.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = run("restore", "sr2", folder, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet", code=1)
    assert "broken.png" in proc.stderr and "1 failed" in proc.stdout
    assert len(list((tmp_path / "out").glob("img*.png"))) == 3


@pytest.mark.parametrize("limit", ["pgdm", "pillow"])
def test_decompression_bomb_is_a_per_file_error(model, clean, tmp_path, monkeypatch, limit):
    """Over pgdm's pixel limit, or over twice Pillow's (which Pillow refuses itself): refused from the header."""
    monkeypatch.setattr(*(("pgdm.io.MAX_PIXELS", 100) if limit == "pgdm" else (Image, "MAX_IMAGE_PIXELS", 100)))  # 16×16 > 100
    proc = run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet", code=1)
    assert proc.stderr.count("is over the limit of 100") >= 3 and "3 failed" in proc.stdout


def test_size_mismatch_and_fit_options(model, tmp_path):
    Image.fromarray(np.full((20, 24), 128, np.uint8)).save(tmp_path / "big.png")
    run("restore", "sr2", tmp_path / "big.png", "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet")
    assert Image.open(tmp_path / "out" / "big.png").size == (24, 20)  # its own size
    for fit in ("--resize", "--crop"):
        proc = run("restore", "sr2", tmp_path / "big.png", "-o", tmp_path / fit, "--model", model, "--steps", 2, "--simulate", fit, "--quiet")
        assert Image.open(tmp_path / fit / "big.png").size == (SIZE, SIZE)
        assert "big.png: 20×24" in proc.stderr and f"to the model's {SIZE}×{SIZE}" in proc.stderr


def test_resize_fits_a_measurement_so_the_output_has_the_model_size(model, tmp_path):
    """SR×4 on a 16×16 model restores 16×16 images from 4×4 measurements: a 10×10 input is resized to 4×4."""
    Image.fromarray(np.full((10, 10), 90, np.uint8)).save(tmp_path / "low.png")
    proc = run("restore", "sr4", tmp_path / "low.png", "-o", tmp_path / "out", "--model", model, "--steps", 2, "--resize", "--quiet")
    assert "low.png: 10×10 resized to 4×4" in proc.stderr
    assert Image.open(tmp_path / "out" / "low.png").size == (SIZE, SIZE)


def test_colour_input_needs_gray_for_a_gray_model(model, tmp_path):
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 77, np.uint8)).save(tmp_path / "grayish.png")  # RGB with equal channels
    args = ("restore", "sr2", tmp_path / "red.png", tmp_path / "grayish.png", "--model", model, "--steps", 2, "--simulate", "--quiet")
    proc = run(*args, "-o", tmp_path / "a", code=1)
    assert "red.png: a colour image" in proc.stderr and "--gray" in proc.stderr and "restored 1 image(s)" in proc.stdout
    proc = run(*args, "-o", tmp_path / "b", "--gray")
    assert "red.png: colour converted to grayscale" in proc.stderr and "grayish.png" not in proc.stderr
    assert "restored 2 image(s)" in proc.stdout


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    a = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 257).astype(np.uint16)  # 0..65535 in steps of 257 = 8-bit levels
    Image.fromarray(a).save(tmp_path / "deep.png")
    Image.fromarray((a // 257).astype(np.uint8)).save(tmp_path / "flat.png")
    deep, flat = pgdm.io.read_image(tmp_path / "deep.png", 1), pgdm.io.read_image(tmp_path / "flat.png", 1)
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    torch.testing.assert_close(deep, flat, atol=1e-6, rtol=0)


def test_chain_with_jpeg_before_the_end_cannot_be_written(clean, tmp_path):
    proc = run("degrade", "jpeg20+inpaint-center", clean / "img0.png", "-o", tmp_path, "--gray", code=1)
    assert "JPEG must be the last operator" in proc.stderr


def test_jpeg_file_of_another_size_restores_at_its_size_and_a_colour_one_for_a_gray_model_is_named(model, tmp_path):
    Image.fromarray(np.full((24, 40), 90, np.uint8)).save(tmp_path / "big.jpg", quality=50)
    run("restore", "jpeg", tmp_path / "big.jpg", "-o", tmp_path / "out", "--model", model, "--steps", 2, "--quiet")
    assert Image.open(tmp_path / "out" / "big.png").size == (40, 24)
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(tmp_path / "colour.jpg", quality=50)
    proc = run("restore", "jpeg", tmp_path / "colour.jpg", "-o", tmp_path / "out2", "--model", model, "--quiet", code=1)
    assert "colour.jpg" in proc.stderr and "needs (1, 24, 40)" in proc.stderr and "pgdm degrade" in proc.stderr


@pytest.mark.parametrize("side", [20000, 65000])
def test_jpeg_header_claiming_a_huge_frame_is_refused_before_decoding(model, tmp_path, side):
    """A few hundred bytes whose SOF0 header claims side×side pixels (once 21 GB of memory, or a libjpeg abort)."""
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(tmp_path / "small.jpg", quality=50)
    data = bytearray((tmp_path / "small.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    for task in ("jpeg", "sr2+jpeg"):
        proc = run("restore", task, tmp_path / "huge.jpg", "-o", tmp_path / "out", "--model", model, "--quiet", code=1)
        assert f"{tmp_path / 'huge.jpg'}: JPEG frame header claims {side}×{side}" in proc.stderr  # the full path
    with pytest.raises(ValueError, match="over the limit"):
        JPEG.from_file(tmp_path / "huge.jpg")


def test_bad_arguments_give_one_line_errors(model, clean, tmp_path):
    proc = run("restore", "sr3-lanczos", clean, "-o", tmp_path, "--model", model, code=2)
    assert "unknown operator 'sr3-lanczos'" in proc.stderr
    proc = run("restore", "sr2", clean, "-o", tmp_path, "--model", tmp_path / "missing.pt", code=2)
    assert "missing.pt" in proc.stderr
    proc = run("restore", "jpeg10", clean, "-o", tmp_path, "--model", model, "--sigma-y", "0.1", "--simulate", code=2)
    assert "non-linear" in proc.stderr
    for option, value, message in [
        ("--sigma-y", "nan", "finite std ≥ 0"),
        ("--sigma-y", "inf", "finite std ≥ 0"),
        ("--sigma-y", "-0.1", "finite std ≥ 0"),
        ("--batch-size", "0", "integer ≥ 1"),
        ("--batch-size", "-1", "integer ≥ 1"),
        ("--steps", "0", "integer ≥ 1"),
        ("--device", "bogus", "is not a device"),
    ]:
        proc = run("restore", "sr2", clean, "-o", tmp_path / "x", "--model", model, option, value, code=2)
        assert message in proc.stderr and option in proc.stderr or option == "--device", proc.stderr
        assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.png"))
    if not torch.cuda.is_available():
        proc = run("restore", "sr2", clean, "-o", tmp_path / "x", "--model", model, "--device", "cuda", code=2)
        assert "CUDA is not available" in proc.stderr


def test_empty_input_folder_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run("restore", "sr2", tmp_path / "empty", "-o", tmp_path / "out", "--model", model, code=2)
    assert "no image files" in proc.stderr


def test_non_finite_weights_are_reported_and_nothing_is_written(nan_model, clean, tmp_path):
    proc = run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", nan_model, "--steps", 2, "--simulate", "--quiet", code=1)
    assert proc.stderr.count("sampling produced NaN/Inf") >= 3 and "img0.png" in proc.stderr
    assert not list((tmp_path / "out").glob("*.png"))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=pytest.fail) == {}


def test_api_names_the_rows_that_did_not_finish(nan_model):
    den = pgdm.load_model(str(nan_model))
    op = pgdm.ops.SuperResolution(2)
    with pytest.raises(pgdm.sampler.NonFiniteError) as err:
        pgdm.Restorer(den, steps=2).restore(torch.zeros(2, 1, SIZE // 2, SIZE // 2), op)
    assert err.value.rows == [0, 1] and err.value.result.isnan().all()
    with pytest.raises(ValueError, match=r"NaN or Inf in image\(s\) \[1\]"):
        y = torch.zeros(2, 1, SIZE // 2, SIZE // 2)
        y[1, 0, 0, 0] = float("nan")
        pgdm.Restorer(den, steps=2).restore(y, op)
    with pytest.raises(ValueError, match="sigma_y must be a finite"):
        pgdm.Restorer(den, steps=2).restore(torch.zeros(1, 1, SIZE // 2, SIZE // 2), op, sigma_y=float("nan"))


def test_python_api_takes_pil_images_and_uint8_arrays():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    t = pgdm.io.to_tensor(img)
    assert t.shape == (1, 1, 8, 8) and float(t.min()) == -1.0
    assert np.array_equal(np.asarray(pgdm.io.to_pil(t[0])), np.asarray(img))
    rgb = np.stack([np.asarray(img)] * 3, -1)
    assert pgdm.io.to_tensor(rgb).shape == (1, 3, 8, 8)
    torch.testing.assert_close(pgdm.io.to_tensor(rgb, channels=1), t, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="uint8 array"):
        pgdm.io.to_tensor(np.zeros((8, 8), np.float32))


# ---------------------------------------------------------------- data safety


def _digests(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_degrade_and_restore_never_overwrite_their_inputs(model, clean, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in clean.iterdir():
        (photos / p.name).write_bytes(p.read_bytes())
    before = _digests(photos)
    proc = run("degrade", "sr2", photos, "-o", photos, "--gray", code=2)
    assert "would overwrite the input" in proc.stderr and proc.stderr.count("\n") == 1
    for extra in ([], ["--overwrite"]):
        proc = run("restore", "sr2", photos, "-o", photos, "--model", model, "--steps", 2, "--simulate", *extra, code=2)
        assert "would overwrite the input" in proc.stderr
    os.link(photos / "img0.png", tmp_path / "linked.png")  # the same file under another name
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "linked.png", tmp_path / "out" / "linked.png")
    proc = run("restore", "sr2", tmp_path / "linked.png", "-o", tmp_path / "out", "--model", model, "--simulate", "--overwrite", code=2)
    assert "would overwrite the input" in proc.stderr
    assert _digests(photos) == before


def test_outputs_get_the_umask_mode_and_leave_no_temporaries(model, clean, tmp_path):
    old = os.umask(0o022)
    try:
        run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet", "--grid", tmp_path / "out" / "grid.png")
        run("degrade", "inpaint-center", clean, "-o", tmp_path / "deg", "--gray")
    finally:
        os.umask(old)
    files = [*(tmp_path / "out").iterdir(), *(tmp_path / "deg").iterdir()]
    assert len(files) == 3 + 1 + 1 + 6
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}


def test_output_name_collisions_are_refused(model, clean, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.open(clean / "img0.png").save(tmp_path / "a" / "x.png")
    Image.open(clean / "img1.png").save(tmp_path / "a" / "x.bmp")
    Image.open(clean / "img2.png").save(tmp_path / "b" / "x.png")
    for inputs in ([tmp_path / "a"], [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]):
        proc = run("restore", "sr2", *inputs, "-o", tmp_path / "out", "--model", model, "--simulate", code=2)
        assert "would both be written as x.png" in proc.stderr
        assert not list((tmp_path / "out").glob("*.png"))


def test_a_file_named_like_a_mask_is_an_image_for_other_tasks(model, clean, tmp_path):
    Image.open(clean / "img0.png").save(tmp_path / "img0.png")
    Image.open(clean / "img1.png").save(tmp_path / "img0_mask.png")
    proc = run("restore", "sr2", tmp_path, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet")
    assert "restored 2 image(s)" in proc.stdout and (tmp_path / "out" / "img0_mask.png").exists()


def test_unusable_output_folders_fail_before_any_work(model, clean, tmp_path):
    (tmp_path / "file").write_text("")
    proc = run("restore", "sr2", clean, "-o", tmp_path / "file", "--model", model, "--simulate", code=2)
    assert "is a file, not a folder" in proc.stderr
    proc = run("restore", "sr2", clean, "-o", "/proc/pgdm-out", "--model", model, "--simulate", code=2)
    assert "cannot write into the output folder /proc/pgdm-out" in proc.stderr


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ("[1, 2]", "got a list")])
def test_corrupt_metrics_file_is_reported(model, clean, tmp_path, content, message):
    (tmp_path / "metrics.json").write_text(content)
    proc = run("restore", "sr2", clean, "-o", tmp_path, "--model", model, "--simulate", code=2)
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert (tmp_path / "metrics.json").read_text() == content and not list(tmp_path.glob("*.png"))


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError):
        pgdm.io.write_image(torch.zeros(1, 4, 4), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- engine backends


@pytest.mark.slow
def test_compile_backend_pads_to_one_size_and_matches_the_restorer(model, clean, tmp_path, monkeypatch):
    from pgdm.entrypoints.config import EngineSettings

    engines = []
    make = EngineSettings.restorer
    monkeypatch.setattr(EngineSettings, "restorer", lambda *a: engines.append(make(*a)) or engines[-1])
    run("degrade", "sr4", clean, "-o", tmp_path / "deg", "--gray")
    common = ("restore", "sr4", tmp_path / "deg", "--model", model, "--steps", 3, "--quiet", "--batch-size", 2)
    run(*common, "-o", tmp_path / "plain")  # pgdm.Restorer
    proc = run(*common, "-o", tmp_path / "engine", "--backend", "compile", "--channels-last")
    assert "compiling the step for batches of 2" in proc.stderr
    assert {rows for _, rows in engines[-1]._static_ops} == {2}, "the last batch of 1 is padded to the compiled size"
    for name in ("img0", "img1", "img2"):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{name}.png"), dtype=np.int16) for d in ("plain", "engine"))
        assert np.abs(a - b).max() <= 2  # float32 NCHW vs NHWC and Inductor's reordering round differently


def test_eager_engine_with_channels_last_gives_the_restorer_result(model, clean, tmp_path):
    run("degrade", "sr4", clean, "-o", tmp_path / "deg", "--gray")
    common = ("restore", "sr4", tmp_path / "deg", "--model", model, "--steps", 3, "--quiet")
    run(*common, "-o", tmp_path / "plain")
    run(*common, "-o", tmp_path / "engine", "--backend", "eager", "--channels-last")
    for name in ("img0", "img1", "img2"):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{name}.png"), dtype=np.int16) for d in ("plain", "engine"))
        assert np.abs(a - b).max() <= 2


def test_method_option_runs_the_named_method(model, clean, tmp_path):
    args = ("restore", "sr2", clean / "img0.png", "--model", model, "--steps", 3, "--simulate", "--quiet")
    run(*args, "-o", tmp_path / "pigdm")
    run(*args, "-o", tmp_path / "ddnm", "--method", "ddnm")
    m = json.loads((tmp_path / "ddnm" / "metrics.json").read_text())["img0"]
    assert m["method"] == "ddnm"
    assert (tmp_path / "pigdm" / "img0.png").read_bytes() != (tmp_path / "ddnm" / "img0.png").read_bytes()
    proc = run("restore", "jpeg10", clean / "img0.png", "-o", tmp_path / "dps", "--model", model, "--simulate", "--method", "dps", "--quiet", code=2)
    assert "pigdm" in proc.stderr and proc.stderr.count("\n") == 1


def test_end_on_measurement_flag_reaches_the_job_config():
    from pgdm.entrypoints.cli import build_parser, restore_config

    def config(*flags):
        return restore_config(build_parser().parse_args(["restore", "sr4", "in.png", "-o", "out", *flags]))

    assert config().sampler.end_on_measurement is True
    assert config("--no-end-on-measurement").sampler.end_on_measurement is False
    assert config("--end-on-measurement").sampler.end_on_measurement is True
    assert "--no-end-on-measurement" in run("restore", "--help").stdout


def test_a_failed_write_names_the_file_lists_only_written_images_and_resumes(model, clean, tmp_path, monkeypatch):
    """A full disk: the write of the second image fails. metrics.json lists only images whose PNG is on disk, the
    one-line error names the file, and the same command then finishes the job."""
    import errno

    import pgdm.entrypoints.restore_job as restore_job

    real_write, calls = restore_job.write_image, []

    def write_until_full(x, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(x, path, **kw)

    monkeypatch.setattr(restore_job, "write_image", write_until_full)
    out = tmp_path / "out"
    args = ("restore", "sr2", clean, "-o", out, "--model", model, "--steps", 2, "--simulate", "--quiet")
    failed = run(*args, code=2)
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("pgdm restore: error: cannot write ") and str(out / "img1.png") in line and "No space left" in line
    assert "Traceback" not in failed.stderr
    listed = set(json.loads((out / "metrics.json").read_text()))
    assert listed == {p.stem for p in out.glob("img*.png")} == {"img0"}
    monkeypatch.setattr(restore_job, "write_image", real_write)
    resumed = run(*args)
    assert "restored 2 image(s), skipped 1 already done" in resumed.stdout
    assert set(json.loads((out / "metrics.json").read_text())) == {"img0", "img1", "img2"}


def test_a_png_without_its_metrics_entry_is_restored_again(model, clean, tmp_path):
    out = tmp_path / "out"
    args = ("restore", "sr2", clean, "-o", out, "--model", model, "--steps", 2, "--simulate", "--quiet")
    run(*args)
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["img1"]  # as a kill between the PNG and the metrics merge leaves it
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert "restored 1 image(s), skipped 2 already done" in run(*args).stdout
    assert set(json.loads((out / "metrics.json").read_text())) == {"img0", "img1", "img2"}


def test_the_same_input_twice_is_restored_once_and_counted_once(model, clean, tmp_path):
    img = clean / "img0.png"
    result = run("restore", "sr2", img, img, clean, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet")
    assert "restored 3 image(s)" in result.stdout
    assert result.stderr.count("given more than once") == 2, result.stderr
    assert len(json.loads((tmp_path / "out" / "metrics.json").read_text())) == 3


def test_a_pt_without_sidecar_names_the_config_flag_and_the_flag_takes_a_json_file(model, clean, tmp_path):
    from safetensors.torch import load_file

    pt = tmp_path / "tiny.pt"
    torch.save(load_file(model), pt)
    args = ("restore", "sr2", clean / "img0.png", "-o", tmp_path / "out", "--model", pt, "--steps", 2, "--simulate", "--quiet")
    refused = run(*args, code=2)
    assert "--config PRESET" in refused.stderr and "--config FILE.json" in refused.stderr and "config=" in refused.stderr
    assert "restored 1 image(s)" in run(*args, "--config", model.with_suffix(".json")).stdout
    assert "unknown model config 'nope'" in run(*args, "--config", "nope", code=2).stderr


def test_restore_help_shows_every_options_default():
    from pgdm.entrypoints.cli import build_parser

    parser = build_parser()
    restore = next(a for a in parser._actions if isinstance(a.choices, dict)).choices["restore"]
    formatter = restore._get_formatter()
    missing = [
        a.option_strings[-1] for a in restore._actions
        if a.option_strings and not a.required and a.default is not argparse.SUPPRESS and "default" not in formatter._get_help_string(a)
    ]  # fmt: skip
    assert not missing, f"options whose --help shows no default: {missing}"
    assert "(default: auto)" in run("restore", "--help").stdout
    assert run("--version").stdout.strip() == f"pgdm {pgdm.__version__}"


def test_progress_in_a_log_is_a_few_plain_lines(model, clean, tmp_path):
    """stderr is not a terminal here (captured): no bar redraws, no nested step bars; one line when done."""
    result = run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", model, "--steps", 4, "--simulate", "--batch-size", 1)
    assert "\r" not in result.stderr, result.stderr[:300]
    progress = [line for line in result.stderr.splitlines() if line.startswith("images:")]
    assert progress and progress[-1].startswith("images: 3/3 img, ") and "PSNR" in progress[-1]
    assert len(result.stderr.splitlines()) <= 3, result.stderr


def test_degrade_errors_name_the_file_and_the_flag_and_a_bad_task_is_reported_once(clean, tmp_path):
    Image.fromarray(np.full((30, 45), 90, np.uint8)).save(tmp_path / "odd.png")
    proc = run("degrade", "sr4", tmp_path / "odd.png", clean / "img0.png", "-o", tmp_path / "out", "--gray", code=1)
    line = next(line for line in proc.stderr.splitlines() if "odd.png" in line)
    assert f"{tmp_path / 'odd.png'}: sr4: the 30×45 image is not divisible by 4" in line and "--size" in line
    proc = run("degrade", "sr4x", clean, "-o", tmp_path / "bad", "--gray", code=2)
    assert proc.stderr.count("unknown operator") == 1 and proc.stderr.startswith("pgdm degrade: error: unknown operator 'sr4x'")
    proc = run("degrade", "jpeg10", clean, "-o", tmp_path / "noisy", "--gray", "--sigma-y", "0.1", code=2)
    assert proc.stderr.count("needs a linear task") == 1


def test_demo_prints_elapsed_time_and_an_estimate_after_each_task(tmp_path, monkeypatch):
    import pgdm.entrypoints.cli as cli

    monkeypatch.setattr(cli, "DEMO_TASKS", cli.DEMO_TASKS[:2])
    out = run("demo", "-o", tmp_path / "demo", "--steps", 1, "--quiet").stdout
    first, second = (line for line in out.splitlines() if line.startswith("[1/2]") or line.startswith("[2/2]"))
    time = r"(\d+ min )?\d+ s"
    assert re.search(rf"\({time} so far, about {time} to go\)$", first), first
    assert re.search(rf"\({time} so far\)$", second), second
    assert re.search(rf"1 steps, {time} in all", out)
    assert "(default: 20)" in run("demo", "--help").stdout


# ---------------------------------------------------------------- images of any size


def _smooth_gray(path, height, width):
    yy, xx = np.mgrid[:height, :width]
    Image.fromarray((127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8), mode="L").save(path)
    return path


@pytest.mark.parametrize("task, size, written", [("sr4", (64, 96), "png"), ("jpeg10", (96, 160), "jpg"), ("inpaint-center", (40, 24), "png")])
def test_images_are_restored_at_their_own_size(task, size, written, model, tmp_path):
    """A 16×16 model restores a 64×96 PNG, a 96×160 JPEG and a 40×24 inpainting at those sizes (tiles of 16×16)."""
    (tmp_path / "in").mkdir()
    _smooth_gray(tmp_path / "in" / "photo.png", *size)
    run("degrade", task, tmp_path / "in", "-o", tmp_path / "deg", "--gray")
    assert (tmp_path / "deg" / f"photo.{written}").exists()
    proc = run("restore", task, tmp_path / "deg", "-o", tmp_path / "out", "--model", model, "--steps", 2, "--quiet",
               "--grid", tmp_path / "grid.png")  # fmt: skip
    assert "restored 1 image(s)" in proc.stdout
    assert Image.open(tmp_path / "out" / "photo.png").size == (size[1], size[0])
    assert Image.open(tmp_path / "grid.png").size[0] > size[1]  # the grid holds panels of the image's own size


def test_resize_still_fits_images_to_the_models_size_and_bad_sizes_name_the_file(model, tmp_path):
    (tmp_path / "in").mkdir()
    _smooth_gray(tmp_path / "in" / "wide.png", 24, 40)
    run("restore", "sr2", tmp_path / "in" / "wide.png", "-o", tmp_path / "fit", "--model", model, "--steps", 2, "--quiet", "--resize")
    assert Image.open(tmp_path / "fit" / "wide.png").size == (SIZE, SIZE)
    _smooth_gray(tmp_path / "in" / "odd.png", 30, 45)
    proc = run("restore", "sr4", tmp_path / "in" / "odd.png", "-o", tmp_path / "odd", "--model", model, "--steps", 2, "--quiet",
               "--simulate", code=1)  # fmt: skip
    assert "odd.png" in proc.stderr and "not divisible by 4" in proc.stderr
