"""Throughput of ``pgdm restore`` in one process and over torchrun ranks, and the coordination cost per image.

Runs the same job (default model, ``sr4``, clean demo images restored with ``--simulate``) three ways, one thread
per process: in this process through :class:`pgdm.entrypoints.restore_job.RestoreJob` (no torchrun), then
``torchrun --nproc-per-node 1`` and ``2`` (the ranks' own figure: images over the time from the first claim to
the last batch, model loading and start-up excluded). The coordination cost per image is timed apart: the two
``store.add`` calls of a batch on a c10d TCPStore, and one ``metrics.json`` merge of a batch into a file that
already holds the whole job's entries (and one of ``--large-entries``), each divided by the batch size.

    OMP_NUM_THREADS=1 python benchmarks/bench_distributed.py --images 32 --steps 20 --batch-size 4
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pgdm.entrypoints.cli import DEMO_IMAGES, build_parser, restore_config
from pgdm.entrypoints.outputs import MetricsFile
from pgdm.entrypoints.restore_job import RestoreJob

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _inputs(folder: Path, count: int) -> Path:
    demo = sorted(DEMO_IMAGES.glob("*.png"))
    for i in range(count):
        shutil.copy(demo[i % len(demo)], folder / f"img{i:04d}.png")
    return folder


def _argv(inputs: Path, out: Path, opts) -> list[str]:
    return ["restore", "sr4", str(inputs), "-o", str(out), "--simulate", "--steps", str(opts.steps),
            "--batch-size", str(opts.batch_size), "--quiet"]  # fmt: skip


def one_process(inputs: Path, out: Path, opts) -> float:
    """Images/s of RestoreJob.restore over the whole job in this process (model loaded before the clock)."""
    job = RestoreJob(restore_config(build_parser().parse_args(_argv(inputs, out, opts))), torch.device("cpu"))
    work = job.pending()
    start = time.perf_counter()
    done = job.restore(work)
    return done / (time.perf_counter() - start)


def torchrun(inputs: Path, out: Path, opts, nproc: int) -> float:
    """The ranks' combined images/s from the summary of ``torchrun --nproc-per-node nproc -m pgdm restore``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [TORCHRUN, "--nproc-per-node", str(nproc), "-m", "pgdm", *_argv(inputs, out, opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    match = re.search(r"(\d+) ranks: ([\d.]+) img/s together", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return float(match.group(2))


def store_ms(reps: int) -> float:
    """Median milliseconds of one ``store.add`` round trip to a TCPStore on this host."""
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        store.add("claimed", 4)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def metrics_ms(folder: Path, entries: int, batch: int, reps: int) -> float:
    """Median milliseconds of merging ``batch`` entries into a metrics.json of ``entries`` entries."""
    metrics = MetricsFile(folder / "metrics.json")
    entry = {"seconds": 0.5, "consistency_rms": 0.01, "seed": 0, "sigma_y": 0.0, "psnr": 20.0, "ssim": 0.5, "pinv_psnr": 18.0, "pinv_ssim": 0.4}
    metrics.update({f"img{i:06d}": entry for i in range(entries)})
    samples = []
    for r in range(reps):
        start = time.perf_counter()
        metrics.update({f"new{r}_{i}": entry for i in range(batch)})
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--reps", type=int, default=200, help="timed calls of store.add and of the metrics merge")
    p.add_argument("--large-entries", type=int, default=10000, help="also time the merge into a metrics.json this large")
    opts = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        inputs = _inputs(root / "in", opts.images)
        rates = {"1 process (no torchrun)": one_process(inputs, root / "single", opts)}
        for nproc in (1, 2):
            rates[f"torchrun --nproc-per-node {nproc}"] = torchrun(inputs, root / f"ranks{nproc}", opts, nproc)
        add = store_ms(opts.reps)
        merges = {}
        for entries in (opts.images, opts.large_entries):
            (root / f"m{entries}").mkdir()
            merges[entries] = metrics_ms(root / f"m{entries}", entries, opts.batch_size, opts.reps)
    print(f"default model, sr4, {opts.images} images, {opts.steps} steps, batch {opts.batch_size}, 1 thread per process")
    print("| run | images/s |\n|---|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} |")
    print(f"\nstore.add round trip: {add:.3f} ms")
    for entries, merge in merges.items():
        per_image = (2 * add + merge) / opts.batch_size
        print(f"metrics.json holding {entries} entries: merge of a batch {merge:.3f} ms; "
              f"coordination per image (2 × {add:.3f} + {merge:.3f}) / {opts.batch_size} = {per_image:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
