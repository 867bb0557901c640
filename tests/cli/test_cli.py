"""The ``pgdm`` command line through its real entry point, on a tiny random-weight model and few steps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pgdm.models import ModelConfig
from pgdm.operators import JPEG

PGDM = str(Path(sys.executable).parent / "pgdm")
SIZE = 16


def run(*args, check=True, path="", env=None):
    """`pgdm ARGS` in a bare environment (``path``: its PATH; empty unless a C++ compiler is needed; ``env``: more variables)."""
    proc = subprocess.run([PGDM, *map(str, args)], capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": path, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"pgdm {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 16×16 grayscale ADM with random weights, saved as safetensors + JSON config."""
    cfg = ModelConfig(
        "adm",
        {"image_size": SIZE, "channels": 1, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "8"},
        noise_schedule="cosine",
    )
    torch.manual_seed(0)
    net = cfg.build()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(cfg.to_dict()))
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """Three 16×16 grayscale test images."""
    folder = tmp_path_factory.mktemp("clean")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(3):
        a = (127 + 100 * np.sin((xx + 3 * i) / 3.0) * np.cos(yy / (2.0 + i))).astype(np.uint8)
        Image.fromarray(a, mode="L").save(folder / f"img{i}.png")
    return folder


def test_help_everywhere():
    for cmd in ([], ["restore"], ["degrade"], ["demo"], ["train"], ["convert"]):
        out = run(*cmd, "--help").stdout
        assert "usage: pgdm" in out and "example" in out


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


def test_simulate_metrics_samples_and_grid(model, clean, tmp_path):
    proc = run("restore", "sr2", clean, "-o", tmp_path / "out", "--model", model, "--steps", 3, "--simulate", "--num-samples", 2, "--grid", tmp_path / "grid.png", "--quiet")
    assert "restored 3" in proc.stdout
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"psnr", "ssim", "pinv_psnr", "pinv_ssim", "consistency_rms", "seconds"} <= set(m["img0"])
    assert (tmp_path / "out" / "img0_std.png").exists()
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (3 * (SIZE + 4), 3 * (SIZE + 4))


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


def test_corrupt_file_is_reported_and_batch_continues(model, clean, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in clean.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = run("restore", "sr2", folder, "-o", tmp_path / "out", "--model", model, "--steps", 2, "--simulate", "--quiet", check=False)
    assert proc.returncode == 1
    assert "broken.png" in proc.stderr and "1 failed" in proc.stdout
    assert len(list((tmp_path / "out").glob("img*.png"))) == 3


def test_size_mismatch_and_fit_options(model, tmp_path):
    Image.fromarray(np.full((20, 24), 128, np.uint8)).save(tmp_path / "big.png")
    proc = run("restore", "sr2", tmp_path / "big.png", "-o", tmp_path / "out", "--model", model, "--simulate", "--quiet", check=False)
    assert proc.returncode == 1 and "--resize or --crop" in proc.stderr
    for fit in ("--resize", "--crop"):
        run("restore", "sr2", tmp_path / "big.png", "-o", tmp_path / fit, "--model", model, "--steps", 2, "--simulate", fit, "--quiet")
        assert Image.open(tmp_path / fit / "big.png").size == (SIZE, SIZE)


def test_chain_with_jpeg_before_the_end_cannot_be_written(clean, tmp_path):
    proc = run("degrade", "jpeg20+inpaint-center", clean / "img0.png", "-o", tmp_path, "--gray", check=False)
    assert proc.returncode == 1 and "JPEG must be the last operator" in proc.stderr


def test_jpeg_file_of_the_wrong_size_is_reported_by_name(model, tmp_path):
    Image.fromarray(np.full((24, 24), 90, np.uint8)).save(tmp_path / "big.jpg", quality=50)
    proc = run("restore", "jpeg", tmp_path / "big.jpg", "-o", tmp_path / "out", "--model", model, "--quiet", check=False)
    assert proc.returncode == 1 and "big.jpg" in proc.stderr and "needs (1, 16, 16)" in proc.stderr


def test_bad_arguments_give_one_line_errors(model, clean, tmp_path):
    proc = run("restore", "sr3-lanczos", clean, "-o", tmp_path, "--model", model, check=False)
    assert proc.returncode == 2 and "unknown operator 'sr3-lanczos'" in proc.stderr
    proc = run("restore", "sr2", clean, "-o", tmp_path, "--model", tmp_path / "missing.pt", check=False)
    assert proc.returncode == 2 and "missing.pt" in proc.stderr
    proc = run("restore", "jpeg10", clean, "-o", tmp_path, "--model", model, "--sigma-y", "0.1", "--simulate", check=False)
    assert proc.returncode == 2 and "non-linear" in proc.stderr


def test_compile_without_a_cxx_compiler_fails_in_one_line(model, clean, tmp_path):
    run("degrade", "sr4", clean, "-o", tmp_path / "deg", "--gray")
    # no PATH, so no C++ compiler, and a fresh Inductor cache, so nothing compiled earlier is reused
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    args = ("restore", "sr4", tmp_path / "deg", "--model", model, "--steps", 2, "--quiet", "-o", tmp_path / "out", "--backend", "compile")
    proc = run(*args, check=False, env=cache)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "torch.compile could not build the step" in proc.stderr, proc.stderr[-2000:]
    assert "C++ compiler" in proc.stderr and "backend='eager'" in proc.stderr


@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_engine_backends_and_channels_last_give_the_restorer_result(backend, model, clean, tmp_path):
    run("degrade", "sr4", clean, "-o", tmp_path / "deg", "--gray")
    common = ("restore", "sr4", tmp_path / "deg", "--model", model, "--steps", 3, "--quiet")
    run(*common, "-o", tmp_path / "plain")  # pgdm.Restorer
    # pgdm.engine, NHWC network; Inductor needs the C++ compiler on PATH
    run(*common, "-o", tmp_path / "engine", "--backend", backend, "--channels-last", path=os.environ.get("PATH", ""))
    for name in ("img0", "img1", "img2"):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{name}.png"), dtype=np.int16) for d in ("plain", "engine"))
        assert np.abs(a - b).max() <= 2  # float32 NCHW vs NHWC (and Inductor's reordering) round differently
