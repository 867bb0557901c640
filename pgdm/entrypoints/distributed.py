"""One ``pgdm restore`` job spread over the processes of a torchrun launch (one node or many).

Every rank sets up the same :class:`pgdm.entrypoints.restore_job.RestoreJob` (one
:class:`~pgdm.entrypoints.config.RestoreJobConfig`) on its own device (``cuda:LOCAL_RANK`` for a
CUDA ``--device``, else the CPU). Rank 0 lists the unfinished images, images of one size together
(:meth:`~pgdm.entrypoints.restore_job.RestoreJob.by_size`), and broadcasts that list; ranks then
claim batches of ``--batch-size`` positions of it from one counter in torchrun's c10d store (``store.add``),
so a fast rank takes more batches and no image is handed out twice. Each rank merges its entries into
``metrics.json`` under the folder's lock after writing its PNGs (:class:`pgdm.entrypoints.outputs.MetricsFile`), so the
file stays one valid JSON object with each finished image once, whichever rank dies when. A re-run, with any
world size, or torchrun's own restart (``--max-restarts``) skips every image whose PNG exists and is listed.

Example, inside a script launched with ``torchrun --nproc-per-node 2 script.py``::

    from pgdm import SamplerSettings
    from pgdm.entrypoints import distributed
    from pgdm.entrypoints.config import IOSettings, RestoreJobConfig, TaskSettings

    config = RestoreJobConfig(TaskSettings("sr4"), IOSettings(("low_res/",), "restored/"), SamplerSettings(steps=50))
    exit_code = distributed.restore(config)
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from .config import RestoreJobConfig, parse_device
from .progress import progress_bar
from .restore_job import RestoreJob, WorkItem, print_summary

__all__ = ["Launch", "RankReport", "WorkCounter", "device_for_rank", "launched_by_torchrun", "restore"]

_POLL_S = 0.2  # how often rank 0 reads the global count while the other ranks finish


@dataclass(frozen=True)
class Launch:
    """What torchrun tells a worker through its environment."""

    rank: int
    world_size: int
    local_rank: int
    restart: int  # TORCHELASTIC_RESTART_COUNT: 0, then 1, 2, … after each elastic restart

    @classmethod
    def from_env(cls) -> Launch:
        env = os.environ
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), int(env.get("TORCHELASTIC_RESTART_COUNT", 0)))


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def device_for_rank(name: str, local_rank: int) -> torch.device:
    """``--device`` for this rank: CUDA (``cuda`` or ``cuda:N``) → ``cuda:LOCAL_RANK`` (wrapping round the
    node's devices, so several ranks may share one GPU); any other device as given."""
    device = parse_device(name)
    if device.type != "cuda":
        return device
    return torch.device("cuda", local_rank % torch.cuda.device_count())


class WorkCounter:
    """A cursor over a shared list of ``total`` positions, held in a c10d store: :meth:`claims` yields the next
    ``size`` positions on each call of ``store.add``, so every position goes to exactly one caller."""

    def __init__(self, store: dist.Store, key: str, total: int, size: int) -> None:
        self.store, self.key, self.total, self.size = store, key, total, size

    def claims(self) -> Iterator[range]:
        """Ranges of positions claimed by this process, until the list is used up."""
        while (end := self.store.add(self.key, self.size)) - self.size < self.total:
            yield range(end - self.size, min(end, self.total))


@dataclass
class RankReport:
    """What one rank did, gathered by every rank for the summary and the exit code."""

    rank: int
    host: str
    device: str
    restored: int
    failures: list[str]
    seconds: float  # from the first claim to the last batch written

    @property
    def images_per_s(self) -> float:
        return self.restored / self.seconds if self.seconds > 0 else 0.0


def _broadcast(value, launch: Launch):
    box = [value if launch.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def restore(config: RestoreJobConfig) -> int:
    """Run the job ``config`` as this process's share of a torchrun job; returns the job's exit code.

    Every rank returns the same code: 0, or 1 when any image failed on any rank (each failure is printed by
    its rank as ``error: PATH: ...`` and listed again in rank 0's summary). A process group the caller has
    initialised already is used as it is (and left open); otherwise one is set up for the call and destroyed
    after it. Outside torchrun the job runs as a world of one process.
    """
    launch = Launch.from_env() if launched_by_torchrun() else Launch(0, 1, 0, 0)
    device = device_for_rank(config.model.device, launch.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store = next(dist.rendezvous("env://"))[0] if launched_by_torchrun() else dist.HashStore()
    # keys under the restart count: an elastic restart may reuse the store, holding the killed attempt's keys
    attempt = dist.PrefixStore(f"pgdm/attempt{launch.restart}", store)
    owned = not dist.is_initialized()
    if owned:  # object collectives run on gloo; NCCL (unused by pgdm itself) is there for a pipeline's own tensors
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.PrefixStore("pg", attempt), rank=launch.rank, world_size=launch.world_size)
    try:
        return _restore_ranks(config, launch, device, dist.PrefixStore("restore", attempt))
    finally:
        if owned:
            dist.destroy_process_group()


def _restore_ranks(config: RestoreJobConfig, launch: Launch, device: torch.device, store: dist.Store) -> int:
    lead = launch.rank == 0
    job = RestoreJob(config, device, show_progress=lead)
    # a fresh key per call: a pipeline may run several jobs in one process group, on one store
    # rank 0 lists the work with images of one size together, so each claim of --batch-size positions is one batch
    pending = [i for i, _ in job.by_size(job.pending())] if lead else None
    token, indices, count = _broadcast((uuid.uuid4().hex, pending, len(job.images)), launch)
    if count != len(job.images):
        raise ValueError(f"rank {launch.rank} on {socket.gethostname()} finds {len(job.images)} input images, rank 0 finds {count}")
    work: list[WorkItem] = [(i, job.images[i]) for i in indices]
    bar = progress_bar(len(work), config.io.label, "img", disable=config.io.quiet or not lead, smoothing=0)

    def show(global_done: int) -> None:
        bar.update(global_done - bar.n)

    store = dist.PrefixStore(token, store)
    counter = WorkCounter(store, "claimed", len(work), config.engine.batch_size)
    restored, start = 0, time.perf_counter()
    for claim in counter.claims():
        restored += job.restore([work[i] for i in claim])
        done = store.add("processed", len(claim))
        if lead:
            show(done)
    seconds = time.perf_counter() - start
    if lead:  # the bar keeps counting while the other ranks finish their last batches
        while (done := store.add("processed", 0)) < len(work):
            show(done)
            time.sleep(_POLL_S)
        show(done)
    bar.close()
    if config.io.grid:  # one grid of every rank's images, written by rank 0
        rows: list[dict] | None = [{}] * launch.world_size if lead else None
        dist.gather_object(job.grid_rows, rows, dst=0)
        if lead:
            job.write_grid({i: row for part in rows for i, row in part.items()})
    reports: list[RankReport | None] = [None] * launch.world_size
    mine = RankReport(launch.rank, socket.gethostname(), str(device), restored, job.failures, seconds)
    dist.all_gather_object(reports, mine)
    if lead:
        _print_rank_summary(reports, len(job.images) - len(work), job)
    return 1 if any(r.failures for r in reports) else 0


def _print_rank_summary(reports: Sequence[RankReport], skipped: int, job: RestoreJob) -> None:
    failures = [message for r in reports for message in r.failures]
    for r in reports:
        print(f"rank {r.rank} ({r.host}, {r.device}): restored {r.restored} image(s) in {r.seconds:.1f} s, "
              f"{r.images_per_s:.2f} img/s, {len(r.failures)} failed")  # fmt: skip
    total = sum(r.restored for r in reports)
    wall = max(r.seconds for r in reports)
    print(f"{len(reports)} ranks: {total / wall if wall > 0 else 0.0:.2f} img/s together")
    print_summary(total, skipped, failures, job.folder.folder)
