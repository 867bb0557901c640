"""The typed settings of a restore job, built once by whichever entry point starts it and validated there.

The command line (:mod:`pgdm.entrypoints.cli`), torchrun workers (:mod:`pgdm.entrypoints.distributed`), the Ray
adapter (:mod:`pgdm.entrypoints.ray`) and the server build the same objects; nothing below the entry points sees
an ``argparse.Namespace``. Each dataclass checks its fields in ``__post_init__`` with a one-line ValueError that
names the setting as the user typed it (the command-line flag).

    RestoreJobConfig
    ├── model: ModelSettings        which network, where, for which image size
    ├── sampler: SamplerSettings    the method and its settings (pgdm.sampler)
    ├── engine: EngineSettings      backend, precision, layout, batch size
    ├── task: TaskSettings          the measurement: operator spec, σ_y, seeds, samples, mask
    └── io: IOSettings              inputs, output folder, grid, fitting, progress
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pgdm import validate
from pgdm.engine.options import BACKENDS, PRECISIONS
from pgdm.sampler import Restorer, RestoreInterface, SamplerSettings, settings_from

if TYPE_CHECKING:
    from pgdm.denoiser import Denoiser

__all__ = ["ModelSettings", "EngineSettings", "TaskSettings", "IOSettings", "RestoreJobConfig", "FITS", "parse_device", "sampler_settings", "sigma_y_value"]

FITS = ("resize", "crop")


def parse_device(name: str) -> torch.device:
    """``--device`` as a torch device that exists on this machine, or a one-line ValueError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def sigma_y_value(value: object) -> float:
    """σ_y as every entry point takes it: a finite float ≥ 0 on the [0, 1] pixel scale (0.05 is 5 % of the range)."""
    try:
        sigma = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        sigma = math.nan
    if isinstance(value, bool) or not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"--sigma-y must be a finite std ≥ 0 on the [0, 1] pixel scale (e.g. 0.05), got {value!r}")
    return sigma


def sampler_settings(method: str = "pigdm", steps: int = 100, eta: float | None = None, start_step: int | None = None) -> SamplerSettings:
    """The method and its settings from the command-line options (``--method``, ``--steps``, ``--eta``, ``--start-step``),
    with errors naming those flags."""
    steps = validate.positive_int("--steps", steps)
    if eta is not None:
        eta = validate.real_in_range("--eta", eta, 0.0, 1.0)
    if start_step is not None:
        start_step = validate.integer("--start-step", start_step)
    return settings_from(method, steps, eta, start_step, True, None)


@dataclass(frozen=True)
class ModelSettings:
    """The network: ``name`` is 'default', a checkpoint (.pt/.safetensors) or a diffusers folder; ``config`` a
    preset name or JSON file when the layout cannot be inferred; ``size`` the image size for models without a
    fixed one; ``device`` a torch device name."""

    name: str = "default"
    config: str | None = None
    size: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", validate.positive_int("--size", self.size))

    def torch_device(self) -> torch.device:
        """:attr:`device` checked against this machine."""
        return parse_device(self.device)

    def load(self, device: torch.device | None = None) -> "Denoiser":
        """The network on ``device`` (default: :meth:`torch_device`), float32, frozen."""
        from pgdm.models import load_model

        return load_model(self.name, config=self.config, device=device or self.torch_device())

    def files(self) -> list[Path]:
        """The model's own files (never written over by a job's outputs)."""
        path = Path(self.name)
        return [path, path.with_suffix(".json")] if path.exists() else []


@dataclass(frozen=True)
class EngineSettings:
    """How the plan runs: ``backend`` and ``precision`` by the engine's names (``pgdm.engine.options``),
    ``channels_last`` (NHWC network layout), ``batch_size`` images per batch."""

    backend: str = "eager"
    precision: str = "fp32"
    channels_last: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "batch_size", validate.positive_int("--batch-size", self.batch_size))

    @property
    def plain(self) -> bool:
        """True when ``pgdm.Restorer`` runs the plan as it is (eager, fp32, NCHW): no engine needed."""
        return self.backend == "eager" and self.precision == "fp32" and not self.channels_last

    def restorer(self, denoiser: "Denoiser", sampler: SamplerSettings, batch: int | None = None) -> RestoreInterface:
        """``pgdm.Restorer`` for the plain settings, else a ``pgdm.engine.Engine`` compiled/captured for ``batch``
        rows (default :attr:`batch_size`; a smaller last batch is padded to it instead of compiling again)."""
        if self.plain:
            return Restorer(denoiser, sampler.steps, None, sampler.start_step, sampler.clip_denoised, method=sampler.method, options=dict(sampler.options))
        from pgdm.engine import Engine, EngineConfig

        config = EngineConfig(
            method=sampler.method, steps=sampler.steps, start_step=sampler.start_step, clip_denoised=sampler.clip_denoised,
            method_options=dict(sampler.options), backend=self.backend, precision=self.precision,
            channels_last=self.channels_last, batch_sizes=(batch or self.batch_size,),
        )  # fmt: skip
        return Engine(denoiser, config)


@dataclass(frozen=True)
class TaskSettings:
    """The measurement: ``task`` an operator spec (``sr4``, ``jpeg10``, ``sr2+inpaint-center``…); ``sigma_y`` its
    noise std on the [0, 1] pixel scale; image i of a job uses seed ``seed + i``; ``num_samples`` posterior
    samples averaged per image; ``class_label`` for class-conditional models; ``mask`` an inpainting mask file."""

    task: str
    sigma_y: float = 0.0
    seed: int = 0
    num_samples: int = 1
    class_label: int | None = None
    mask: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError(f"TASK must be an operator spec such as sr4 or jpeg10, got {self.task!r}")
        object.__setattr__(self, "sigma_y", sigma_y_value(self.sigma_y))
        object.__setattr__(self, "seed", validate.integer("--seed", self.seed))
        object.__setattr__(self, "num_samples", validate.positive_int("--num-samples", self.num_samples))
        if self.class_label is not None:
            object.__setattr__(self, "class_label", validate.integer("--class-label", self.class_label))
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask))


@dataclass(frozen=True)
class IOSettings:
    """Files: ``inputs`` image files or folders, ``output`` the output folder (one PNG per input and
    metrics.json); ``simulate``: the inputs are clean images to degrade first; ``grid``: a comparison PNG;
    ``overwrite``: redo finished outputs; ``gray``: convert colour inputs for a 1-channel model; ``fit``:
    "resize" or "crop" inputs of another size; ``quiet``: no progress bars; ``label``: the progress bar's name."""

    inputs: tuple[Path, ...]
    output: Path
    simulate: bool = False
    grid: Path | None = None
    overwrite: bool = False
    gray: bool = False
    fit: str | None = None
    quiet: bool = False
    label: str = "images"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("no inputs: give image files or folders")
        object.__setattr__(self, "inputs", tuple(Path(p) for p in self.inputs))
        object.__setattr__(self, "output", Path(self.output))
        if self.grid is not None:
            object.__setattr__(self, "grid", Path(self.grid))
        if self.fit not in (None, *FITS):
            raise ValueError(f"fit must be one of {', '.join(FITS)} (--resize/--crop), got {self.fit!r}")


@dataclass(frozen=True)
class RestoreJobConfig:
    """Everything ``pgdm restore`` does, in one object (see the module docstring)."""

    task: TaskSettings
    io: IOSettings
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
