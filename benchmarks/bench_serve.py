"""Requests/s and p50/p99 latency of `pgdm serve` at several client concurrencies, with and without batching.

A live server (uvicorn on a thread of this process, 127.0.0.1) runs the default model; C client threads each
send requests one after another (a closed loop) until N requests are answered. "batching" is
``--max-batch B --max-wait-ms W``; "no batching" is ``--max-batch 1``. Prints a Markdown table.

    python benchmarks/bench_serve.py --steps 10 --concurrency 1 8 32 --csv serve.csv
"""
from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from pgdm.engine import EngineConfig
from pgdm.io import read_image, write_image
from pgdm.models import load_model
from pgdm.operators import parse
from pgdm.entrypoints.serve.app import ServeConfig, create_app
from pgdm.entrypoints.serve.server import BackgroundServer

DEMO = Path(__file__).resolve().parents[1] / "pgdm" / "assets" / "demo" / "0_tshirt.png"


def measurement_png(task: str, folder: Path) -> bytes:
    """The bundled T-shirt degraded by ``task``, as a PNG (what a client would upload)."""
    x = read_image(DEMO, 1)
    path = write_image(parse(task, tuple(x.shape[1:]))(x)[0], folder / "y.png")
    return path.read_bytes()


def run_clients(url: str, png: bytes, task: str, steps: int, concurrency: int, total: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for ``total`` requests from ``concurrency`` closed-loop clients."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        with httpx.Client(timeout=1800) as http:
            for seed in counter:  # the shared iterator hands out each request once
                start = time.perf_counter()
                r = http.post(f"{url}/v1/restore", data={"task": task, "steps": str(steps), "seed": str(seed)}, files={"image": png})
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def batches_run(url: str) -> float:
    """Engine batches the server has run so far (the count of its batch-size histogram)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("pgdm_batch_size_count"))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sr2")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2, help="requests per client at each concurrency (at least 8 in all)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--csv", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        png = measurement_png(args.task, Path(folder))
    rows = []
    for mode, max_batch, wait in [("batching", args.max_batch, args.max_wait_ms), ("no batching", 1, 0.0)]:
        config = ServeConfig(engine=EngineConfig(steps=args.steps), max_batch=max_batch, max_wait_ms=wait)
        with BackgroundServer(create_app(load_model("default"), config)) as server:
            run_clients(server.url, png, args.task, args.steps, 1, 1)  # warm-up
            for c in args.concurrency:
                total = max(8, args.requests * c)
                before = batches_run(server.url)
                wall, lat = run_clients(server.url, png, args.task, args.steps, c, total)
                mean_batch = total / (batches_run(server.url) - before)
                rows.append({
                    "mode": mode, "max_batch": max_batch, "max_wait_ms": wait, "concurrency": c, "requests": total,
                    "req_s": total / wall, "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "mean_batch": mean_batch,
                })  # fmt: skip
                print(f"  {mode}, concurrency {c}: {total / wall:.2f} req/s", flush=True)
    print(f"\ndefault model (32x32 gray), task {args.task}, {args.steps} steps, eager fp32, torch threads {torch.get_num_threads()}\n")
    print("| mode | max batch | max wait ms | concurrency | requests | mean batch | req/s | p50 s | p99 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['max_batch']} | {r['max_wait_ms']:g} | {r['concurrency']} | {r['requests']} | {r['mean_batch']:.1f} "
              f"| {r['req_s']:.2f} | {r['p50_s']:.3f} | {r['p99_s']:.3f} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
