"""The command line as separate processes, where that is the point: kill -9, Ctrl-C, concurrent writers, no compiler.

Waits poll the output folder a bounded number of times; the bound (30 min) is a hang guard, not a time limit.
"""
import json
import os
import shutil
import signal
import time

import pytest
from cli_helpers import run, spawn
from PIL import Image

POLLS, POLL_S = 36000, 0.05


def _wait_for_outputs(folder, count, proc):
    for _ in range(POLLS):
        if len(list(folder.glob("img*.png"))) >= count or proc.poll() is not None:
            return
        time.sleep(POLL_S)
    raise AssertionError("hang guard: no progress in 30 minutes")


@pytest.fixture(scope="module")
def six(clean, tmp_path_factory):
    folder = tmp_path_factory.mktemp("six")
    for i in range(6):
        shutil.copy(clean / f"img{i % 3}.png", folder / f"img{i}.png")
    return folder


def _restore_args(inputs, out, model):
    return ("restore", "sr2", *inputs, "-o", out, "--model", model, "--steps", 2, "--simulate", "--batch-size", 1, "--quiet")


@pytest.mark.parametrize("kill_after", [0, 1, 3])
def test_kill_9_then_the_same_command_loses_and_redoes_nothing(six, model, tmp_path, kill_after):
    run(*_restore_args([six], tmp_path / "ref", model))
    out = tmp_path / "out"
    proc = spawn(*_restore_args([six], out, model))
    _wait_for_outputs(out, kill_after, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    written = {p.name for p in out.glob("img*.png")}
    for name in written:  # no partial file under a final name
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    listed = set(json.loads((out / "metrics.json").read_text())) if (out / "metrics.json").exists() else set()
    assert listed <= {n[:-4] for n in written}, "an entry in metrics.json always has its PNG"
    finished = {n for n in written if n[:-4] in listed}  # a PNG whose entry the kill prevented is redone
    result = run(*_restore_args([six], out, model))
    assert f"skipped {len(finished)} already done" in result.stdout, "finished images are not redone"
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "ref")), "every output once, no temporary left"
    for name in os.listdir(out):
        if name.endswith(".png"):
            assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert set(json.loads((out / "metrics.json").read_text())) == {f"img{i}" for i in range(6)}


def test_two_concurrent_writers_into_one_folder_keep_every_entry(six, model, tmp_path):
    images = sorted(six.iterdir())
    out = tmp_path / "shared"
    procs = [spawn(*_restore_args(part, out, model)) for part in (images[:3], images[3:])]
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err[-2000:]
    assert set(json.loads((out / "metrics.json").read_text())) == {f"img{i}" for i in range(6)}
    assert len(list(out.glob("img*.png"))) == 6 and not list(out.glob(".*"))


def test_ctrl_c_exits_130_in_one_line_and_keeps_finished_outputs(six, model, tmp_path):
    out = tmp_path / "out"
    proc = spawn(*_restore_args([six], out, model))
    _wait_for_outputs(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    if proc.returncode == 0:  # it finished first: nothing to interrupt on this machine
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "pgdm restore: interrupted; finished outputs are kept"
    assert "Traceback" not in err
    for png in out.glob("img*.png"):
        Image.open(png).verify()


@pytest.mark.slow
def test_compile_without_a_cxx_compiler_fails_in_one_line(model, clean, tmp_path):
    run("degrade", "sr4", clean, "-o", tmp_path / "deg", "--gray")
    # no PATH, so no C++ compiler, and a fresh Inductor cache, so nothing compiled earlier is reused
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    args = ("restore", "sr4", tmp_path / "deg", "--model", model, "--steps", 2, "--quiet", "-o", tmp_path / "out", "--backend", "compile")
    proc = spawn(*args, env=cache)
    _, err = proc.communicate()
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if not line.startswith(("compiling the step", "engine: "))]
    assert len(lines) == 1 and "torch.compile could not build the step" in lines[0], err[-2000:]
    assert "C++ compiler" in lines[0] and "backend='eager'" in lines[0]
