"""The ``"onnx"`` backend: the method's step exported once per (model, operator, batch) and run by ONNX Runtime.

On a CPU, ONNX Runtime runs the exported step without PyTorch's per-operator dispatch (about 1,000 ATen calls per
step of the default model), which is most of the time at small batch sizes. Exporting
(:func:`pgdm.export.export_step`, checked against the eager step before it is written) takes about as long as a
cold ``torch.compile``, so the file is kept under ``cache_dir()/onnx/`` named by a hash of everything the graph
bakes in — the model's weights (and canvas settings), the operator's content (inpainting masks included), the batch size, the method
and its options, noise, labels, clamping, the torch version and the source of the code that writes the graph
(:func:`graph_code_digest`) — and the next process loads it in a second.
Operators known only by identity are exported to a folder of this process.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import tempfile
from pathlib import Path

import torch

from pgdm.denoiser import Denoiser
from pgdm.sampler import SamplerSettings, SamplingPlan

from .autotune import cache_dir, model_fingerprint

__all__ = ["OnnxSteps", "graph_code_digest"]

GRAPH_CODE = ("pgdm.export", "pgdm.methods", "pgdm.operators", "pgdm.models", "pgdm.kernels")  # what the graph is made of


@functools.cache
def graph_code_digest() -> str:
    """A hash of the source files of the packages an exported step is traced from (:data:`GRAPH_CODE`): a changed
    method, operator, network or export rule names new files, so a cached graph of older code is never run."""
    h = hashlib.sha1()
    for name in GRAPH_CODE:
        folder = Path(importlib.import_module(name).__file__).parent
        for path in sorted(folder.rglob("*.py")):
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


class OnnxSteps:
    """The exported steps of one engine: an ONNX Runtime runner (:class:`pgdm.export.OnnxStepRestorer`) per plan key.

    denoiser: the engine's frozen float32 CPU network; settings: the engine's sampler settings (method, options);
    threads: ONNX Runtime's intra-op threads (torch's thread count, so both runtimes use the same cores).
    """

    def __init__(self, denoiser: Denoiser, settings: SamplerSettings, threads: int) -> None:
        self.denoiser, self.settings, self.threads = denoiser, settings, threads
        self.runners: dict[str, object] = {}
        self._fingerprint: str | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None  # exports of identity-keyed operators

    def runner_for(self, plan: SamplingPlan):
        """The runner whose graph fits ``plan`` (its batch, operator, noise, labels, clamping); exports or loads
        the graph on first sight. Raises ValueError (one line) for a step that cannot be exported."""
        from pgdm.export import OnnxStepRestorer, export_step

        noisy = plan.sigma_y2 is not None
        name = self._file_name(plan, noisy)
        if name not in self.runners:
            path = self._folder(plan) / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{id(self)}.tmp")  # written whole, then renamed: a reader never sees half a file
                export_step(self.denoiser, plan.op, tmp, plan.rows, canvas=tuple(plan.x_init.shape[-2:]), noisy=noisy,
                            clip_denoised=plan.clip_denoised, method=self.settings.method, options=dict(self.settings.options))  # fmt: skip
                tmp.replace(path)
            s = self.settings
            self.runners[name] = OnnxStepRestorer(path, self.denoiser, s.steps, None, s.start_step, options=dict(s.options), threads=self.threads)
        runner = self.runners[name]
        runner.check_plan(plan)
        return runner

    def _file_name(self, plan: SamplingPlan, noisy: bool) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.denoiser)
        parts = [
            self._fingerprint, self.denoiser.extra_repr(), str(getattr(self.denoiser, "seed", "")), plan.op.fingerprint() or f"id{id(plan.op)}", str(tuple(plan.x_init.shape)), plan.method,
            repr(sorted(dict(self.settings.options).items())), f"noisy={noisy}", f"labels={plan.class_labels is not None}",
            f"clip={plan.clip_denoised}", torch.__version__, graph_code_digest(),
        ]  # fmt: skip
        return f"step-{hashlib.sha1('|'.join(parts).encode()).hexdigest()[:20]}.onnx"

    def _folder(self, plan: SamplingPlan) -> Path:
        if plan.op.fingerprint():
            return cache_dir() / "onnx"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pgdm-onnx-")
        return Path(self._scratch.name)
