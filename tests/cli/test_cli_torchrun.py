"""``torchrun -m pgdm restore`` on the CPU (gloo): the same outputs as one process, uneven shards, images of mixed
sizes, a killed rank then the same command, torchrun's restarts, two "nodes" on one machine.

Each test launches real torchrun agents in a bare environment, one thread per process. Waits poll the output
folder a bounded number of times; the bound (30 min) is a hang guard, not a time limit.
"""
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run
from PIL import Image

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
POLLS, POLL_S = 36000, 0.05
IMAGES = 10


@pytest.fixture(scope="module")
def ten(clean, tmp_path_factory):
    """Ten 16×16 images and one broken file."""
    folder = tmp_path_factory.mktemp("ten")
    for i in range(IMAGES):
        shutil.copy(clean / f"img{i % 3}.png", folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def _restore(inputs, out, model, steps=2, batch=2):
    return ["restore", "sr2", *inputs, "-o", out, "--model", model, "--steps", steps, "--simulate", "--batch-size", batch, "--quiet"]


def _torchrun(args, *launcher) -> subprocess.Popen:
    env = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env |= {k: os.environ[k] for k in ("PGDM_AUTOTUNE_BUDGET_S", "PGDM_CACHE_DIR") if k in os.environ}  # the suite's: no measuring
    cmd = [TORCHRUN, *map(str, launcher), "-m", "pgdm", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_pngs(out, ref):
    names = sorted(p.name for p in ref.glob("img*.png"))
    assert sorted(p.name for p in out.glob("img*.png")) == names
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


@pytest.fixture(scope="module")
def reference(ten, model, tmp_path_factory):
    """The single-process run, in-process."""
    out = tmp_path_factory.mktemp("reference")
    run(*_restore([ten], out, model), code=1)  # broken.png fails
    return out


def test_two_ranks_write_what_one_process_writes_and_report_a_bad_file(ten, model, reference, tmp_path):
    proc = _torchrun(_restore([ten], tmp_path, model), "--nproc-per-node", 2)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 1, stderr[-3000:]  # a failed image fails the job, as in one process
    assert "broken.png: not a readable image" in stderr
    assert f"restored {IMAGES} image(s), skipped 0 already done, 1 failed" in stdout
    assert "rank 0 (" in stdout and "rank 1 (" in stdout and "img/s" in stdout
    ranks = [int(line.split(": restored ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("rank ")]
    assert len(ranks) == 2 and sum(ranks) == IMAGES
    _same_pngs(tmp_path, reference)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {f"img{i}" for i in range(IMAGES)}
    expected = json.loads((reference / "metrics.json").read_text())
    assert {n: m["seed"] for n, m in metrics.items()} == {n: m["seed"] for n, m in expected.items()}
    for name, m in metrics.items():  # the same pixels; the float reduction differs with the thread count
        assert m["psnr"] == pytest.approx(expected[name]["psnr"], abs=1e-5)


def test_fewer_images_than_ranks(ten, model, reference, tmp_path):
    proc = _torchrun(_restore([ten / "img7.png"], tmp_path, model), "--nproc-per-node", 2)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "restored 1 image(s), skipped 0 already done, 0 failed" in stdout
    assert "restored 0 image(s)" in stdout, "one rank had nothing to do"
    # a single input is image 0 of its list: seed 0, as in one process given that file alone
    single = tmp_path / "single"
    run(*_restore([ten / "img7.png"], single, model))
    assert (tmp_path / "img7.png").read_bytes() == (single / "img7.png").read_bytes()


MIXED = {"square": (32, 32), "tall": (40, 24), "wide": (64, 96), "tall2": (40, 24)}  # name → (H, W); tiles of 16


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Four grayscale PNGs of three sizes, none the model's 16×16."""
    folder = tmp_path_factory.mktemp("mixed")
    for i, (name, (h, w)) in enumerate(MIXED.items()):
        yy, xx = np.mgrid[:h, :w]
        Image.fromarray((127 + 100 * np.sin((xx + 3 * i) / 5.0) * np.cos(yy / 7.0)).astype(np.uint8), mode="L").save(folder / f"{name}.png")
    return folder


def test_work_is_listed_with_images_of_one_size_together(mixed, model, tmp_path):
    """What rank 0 hands out: sizes in order of first appearance, input order within a size, unreadable files
    last; with --resize every image has the model's size and the input order stays."""
    from pgdm.entrypoints.config import IOSettings, ModelSettings, RestoreJobConfig, TaskSettings
    from pgdm.entrypoints.restore_job import RestoreJob

    folder = tmp_path / "in"
    shutil.copytree(mixed, folder)
    (folder / "aaa_broken.png").write_bytes(b"not an image")
    Image.new("L", (96, 64)).save(folder / "zz_wide.png")
    Image.new("L", (32, 32)).save(folder / "tall3.png")  # listed between sizes it does not share
    config = RestoreJobConfig(TaskSettings("sr2"), IOSettings((folder,), tmp_path / "out", simulate=True), model=ModelSettings(str(model)))
    job = RestoreJob(config, torch.device("cpu"))
    listed = [path.stem for _, path in job.pending()]
    assert listed == ["aaa_broken", "square", "tall", "tall2", "tall3", "wide", "zz_wide"]  # input (name) order
    assert [path.stem for _, path in job.by_size(job.pending())] == ["square", "tall3", "tall", "tall2", "wide", "zz_wide", "aaa_broken"]
    fitted = RestoreJob(dataclasses.replace(config, io=dataclasses.replace(config.io, fit="resize")), torch.device("cpu"))
    assert [path.stem for _, path in fitted.by_size(fitted.pending())] == listed


def test_two_ranks_restore_images_of_mixed_sizes_each_at_its_own_size(mixed, model, tmp_path):
    """Batches claimed by two ranks mix sizes: each image is restored at its own size (a canvas of 16×16 tiles),
    as one process restores it."""
    proc = _torchrun(_restore([mixed], tmp_path / "ranks", model), "--nproc-per-node", 2)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"restored {len(MIXED)} image(s), skipped 0 already done, 0 failed" in stdout
    ranks = [int(line.split(": restored ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("rank ")]
    assert len(ranks) == 2 and sum(ranks) == len(MIXED)
    run(*_restore([mixed], tmp_path / "one", model))
    metrics = json.loads((tmp_path / "ranks" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert set(metrics) == set(MIXED)
    for name, (h, w) in MIXED.items():
        got, want = (np.asarray(Image.open(tmp_path / run_ / f"{name}.png")) for run_ in ("ranks", "one"))
        assert got.shape == (h, w), name
        # a rank may batch an image with another of its size or not: the network's batch-size rounding, ≤ 1 level
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
        assert metrics[name]["seed"] == expected[name]["seed"]
        assert metrics[name]["psnr"] == pytest.approx(expected[name]["psnr"], abs=0.05)


def _workers(agent: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the agent's worker processes."""
    workers = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        rank = [v[5:] for v in environ if v.startswith(b"RANK=")]
        if ppid == agent.pid and rank:
            workers[int(rank[0])] = int(entry.name)
    return workers


def _kill_rank_1_after(out, count, agent):
    for _ in range(POLLS):
        workers = _workers(agent)
        if len(list(out.glob("img*.png"))) >= count and 1 in workers:
            os.kill(workers[1], signal.SIGKILL)
            return
        if agent.poll() is not None:
            raise AssertionError("the run ended before a rank could be killed")
        time.sleep(POLL_S)
    raise AssertionError("hang guard: no progress in 30 minutes")


@pytest.mark.slow
def test_killed_rank_then_the_same_command_then_an_elastic_restart(ten, model, tmp_path):
    images = sorted(ten.glob("img*.png"))
    args = _restore(images, tmp_path / "out", model, steps=20, batch=1)
    ref = tmp_path / "ref"
    run(*_restore(images, ref, model, steps=20, batch=1))
    out = tmp_path / "out"

    agent = _torchrun(args, "--nproc-per-node", 2)
    _kill_rank_1_after(out, 2, agent)
    agent.communicate()
    assert agent.returncode != 0
    finished = {p.name for p in out.glob("img*.png")}
    assert len(finished) < IMAGES
    for name in finished:
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    assert {n[:-4] for n in finished} <= set(json.loads((out / "metrics.json").read_text()))
    inodes = {name: (out / name).stat().st_ino for name in finished}  # an image written again gets a new inode

    # the same command, this time with one elastic restart allowed, killed again: torchrun restarts and finishes
    agent = _torchrun(args, "--nproc-per-node", 2, "--max-restarts", 1)
    _kill_rank_1_after(out, len(finished) + 1, agent)
    stdout, stderr = agent.communicate()
    assert agent.returncode == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("restored ")]
    assert len(lines) == 1, "one summary, from the restarted workers"
    skipped = int(lines[0].split("skipped ")[1].split()[0])
    assert skipped > len(finished), "the restart skips what the killed attempt finished"
    _same_pngs(out, ref)
    assert {name: (out / name).stat().st_ino for name in finished} == inodes, "finished images are not redone"
    assert set(json.loads((out / "metrics.json").read_text())) == {f"img{i}" for i in range(IMAGES)}
    assert not list(out.glob(".*")), "no temporary left"


@pytest.mark.slow
def test_two_nodes_on_one_machine(ten, model, reference, tmp_path):
    port = _free_port()
    launcher = ("--nnodes", 2, "--nproc-per-node", 1, "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pgdm-test")
    agents = [_torchrun(_restore([ten], tmp_path, model), *launcher) for _ in range(2)]
    outputs = [a.communicate() for a in agents]
    assert [a.returncode for a in agents] == [1, 1], outputs[0][1][-3000:]
    summary = "".join(stdout for stdout, _ in outputs)
    assert summary.count(f"restored {IMAGES} image(s), skipped 0 already done, 1 failed") == 1
    _same_pngs(tmp_path, reference)
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {f"img{i}" for i in range(IMAGES)}


def test_python_api_alone_and_inside_the_callers_process_group(ten, model, reference, tmp_path, capsys):
    """``pgdm.entrypoints.distributed.restore`` outside torchrun is a world of one; in a group the caller set up, it runs
    once per call (each call its own claim counter) and leaves the group open."""
    import torch.distributed as dist

    from pgdm.entrypoints import distributed
    from pgdm.entrypoints.cli import build_parser, restore_config

    def args(out):
        return restore_config(build_parser().parse_args([str(a) for a in _restore([ten], out, model)]))

    assert distributed.restore(args(tmp_path / "alone")) == 1 and not dist.is_initialized()
    _same_pngs(tmp_path / "alone", reference)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        for name in ("first", "second"):
            assert distributed.restore(args(tmp_path / name)) == 1
            _same_pngs(tmp_path / name, reference)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
    assert capsys.readouterr().out.count(f"restored {IMAGES} image(s), skipped 0 already done, 1 failed") == 3
