"""Loading checkpoints safely into a :class:`pgdm.Denoiser`, and converting them to safetensors."""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..denoiser import Denoiser
from ..schedules import from_name as schedule_from_name
from .diffusers_unet import load_diffusers_folder
from .files import first_sentence, read_checkpoint, read_json_object, read_safetensors
from .presets import PRESETS, ModelConfig

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "PHOTO_MODEL",
    "ConfigLike",
    "check_state_dict",
    "convert_checkpoint",
    "infer_config",
    "load_model",
    "load_network",
    "read_checkpoint",
]

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default" / "model.safetensors"
PHOTO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "photo" / "model.safetensors"
# Names load_model resolves to the models shipped inside the package (DEFAULT_MODEL, PHOTO_MODEL).
EMBEDDED_MODELS = ("default", "photo")
ConfigLike = str | os.PathLike[str] | Mapping[str, Any] | ModelConfig
# The embedded model's config, by the name its JSON file gives it: a config name beside the published presets.
EMBEDDED_CONFIGS = {"fashion32": DEFAULT_MODEL.with_suffix(".json")}
# How to name the layout, on the command line and in Python.
_CONFIG_HINT = (
    "give its config: --config PRESET (docs/models.md; fashion32 is the embedded model's) or --config FILE.json (as "
    "`pgdm convert` writes it, or create_model kwargs) on the command line, config= in Python"
)
StateDict = dict[str, torch.Tensor]
Layout = dict[str, tuple[int, ...]]


def _first_layout_difference(got: Layout, expected: Layout) -> str | None:
    """One line describing the first key or shape in ``got`` that does not fit ``expected``, or None."""
    missing = [k for k in expected if k not in got]
    if missing:
        return f"missing key {missing[0]!r} (expected shape {expected[missing[0]]}; {len(missing)} key(s) missing)"
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        return f"unexpected key {unexpected[0]!r} with shape {got[unexpected[0]]} ({len(unexpected)} unexpected key(s))"
    for k, shape in expected.items():
        if got[k] != shape:
            return f"key {k!r} has shape {got[k]}, expected {shape}"
    return None


def _layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def check_state_dict(net: nn.Module, state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> None:
    """Raise a one-line ValueError naming the first missing, unexpected or wrongly shaped key, or the first
    key holding integers (or booleans) where the network has floating-point weights."""
    expected = net.state_dict()
    problem = _first_layout_difference(_layout(state_dict), _layout(expected))
    if problem:
        raise ValueError(f"checkpoint does not fit model config {config.name or dict(config.kwargs)}: {problem}")
    for key, tensor in state_dict.items():
        if expected[key].is_floating_point() and not tensor.is_floating_point():
            raise ValueError(
                f"checkpoint key {key!r} holds {str(tensor.dtype).removeprefix('torch.')} values; "
                "weights must be floating point (float32, float16, bfloat16 or float64)"
            )


@functools.cache
def _preset_layout(name: str) -> Layout:
    with torch.device("meta"):
        return _layout(PRESETS[name].build().state_dict())


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The preset whose state-dict layout (keys and shapes) equals ``state_dict``'s.

    Shapes cannot reveal the attention head count or head order, so only the published layouts
    (:data:`PRESETS`) are recognised; presets sharing a layout must also share their behaviour
    (e.g. ``256x256_diffusion_uncond`` and ``lsun_256`` differ only in dropout). Raises a one-line
    ValueError otherwise, naming the closest preset's first differing key. Tensors may be on
    the meta device.
    """
    if "time_embed.0.weight" in state_dict:
        architecture = "adm"
    elif "temb.dense.0.weight" in state_dict:
        architecture = "ddpm"
    else:
        raise ValueError("unrecognised state dict: expected ADM ('time_embed.0.weight') or DDPM ('temb.dense.0.weight') keys")
    layout = _layout(state_dict)
    candidates = [name for name, c in PRESETS.items() if c.architecture == architecture]
    matches = [name for name in candidates if _preset_layout(name) == layout]
    if not matches:
        closest = min(candidates, key=lambda n: len(set(_preset_layout(n).items()) ^ set(layout.items())))
        raise ValueError(
            f"the state dict matches no published {architecture} layout (closest preset {closest!r}: "
            f"{_first_layout_difference(layout, _preset_layout(closest))}); {_CONFIG_HINT}"
        )
    if len({PRESETS[name].behaviour_key() for name in matches}) > 1:
        raise ValueError(f"the state dict fits several presets that compute differently ({matches}); {_CONFIG_HINT}")
    return PRESETS[matches[0]]


def _resolve_config(config: ConfigLike) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name, a JSON file's path, a dict or a ModelConfig."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if str(config) in EMBEDDED_CONFIGS:
            path = EMBEDDED_CONFIGS[str(config)]
        elif str(config) in PRESETS or (path.suffix != ".json" and not path.is_file()):
            if str(config) not in PRESETS:
                raise ValueError(f"unknown model config {str(config)!r}; give a preset ({', '.join(sorted([*PRESETS, *EMBEDDED_CONFIGS]))}) or a JSON file")
            return ModelConfig.from_name(str(config))
        if not path.is_file():
            raise FileNotFoundError(f"no such model config file: {str(config)!r}; give a preset ({', '.join(sorted([*PRESETS, *EMBEDDED_CONFIGS]))}) or a JSON file")
        return _sidecar_config(path, read_json_object(path, "the model config (pgdm convert writes it) or create_model kwargs"))
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a preset name, a JSON file, a dict or a ModelConfig, got {type(config).__name__}")
    return ModelConfig.from_dict(config)


def _sidecar_config(sidecar: Path, meta: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(meta)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{sidecar}: not a valid model config ({first_sentence(str(e))})") from None
    except KeyError as e:
        raise ValueError(f"{sidecar}: not a valid model config (missing {e})") from None


def load_network(
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build ``config``'s network on the meta device and assign ``state_dict``'s tensors to it.

    The layout is checked first (one-line ValueError naming the key and expected shape), then
    ``load_state_dict(strict=True, assign=True)`` adopts the tensors without a copy. The network
    is moved to ``device``, cast with ``to_precision(dtype)``, put in eval mode and frozen
    (``requires_grad=False``: gradients flow to the input only).
    """
    with torch.device("meta"):
        net = config.build()
    check_state_dict(net, state_dict, config)
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.to(device).to_precision(dtype).eval().requires_grad_(False)


def _resolve_spec(spec: str | os.PathLike[str]) -> Path:
    if spec in EMBEDDED_MODELS:
        path = DEFAULT_MODEL if spec == "default" else PHOTO_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"the {spec} model is not installed: {path} is missing")
        return path
    path = Path(spec)
    if not path.exists():
        hint = f"; {spec!r} is a config preset: give the checkpoint's path and --config {spec} (config= in Python)" if spec in PRESETS else ""
        raise FileNotFoundError(f"no such model file or folder: {str(spec)!r}{hint}")
    return path


def load_model(
    spec: str | os.PathLike[str],
    *,
    config: ConfigLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Denoiser:
    """Load a pretrained ε-prediction network with its noise schedule as a :class:`pgdm.Denoiser`.

    Args:
        spec: one of
            - a guided-diffusion / DPS / DDRM checkpoint (``.pt``, ``.pth``, ``.ckpt``): a bare
              state dict read with ``torch.load(weights_only=True)``;
            - a ``.safetensors`` file, with its config in the JSON file of the same name beside it;
            - a diffusers ``UNet2DModel`` folder (pipeline root or ``unet/``; needs ``pgdm[diffusers]``);
            - ``"default"``: the model shipped in ``pgdm/assets/default/`` (32×32 grayscale, Fashion-MNIST);
            - ``"photo"``: the model shipped in ``pgdm/assets/photo/`` (32×32 RGB patches of natural photos).
        config: a preset name (``"256x256_diffusion_uncond"``, ``"ffhq_10m"``, … see
            :data:`PRESETS`), a dict of guided-diffusion ``create_model`` kwargs or of the JSON
            config form, or a :class:`ModelConfig`. Default: the JSON beside a ``.safetensors``
            file, else the preset whose layout the state dict matches.
        device: where to put the network (default: CPU).
        dtype: float32 (default) or float64 for the whole network; float16 or bfloat16 for the
            body only, with embeddings and GroupNorm in float32 as guided-diffusion's fp16 models.

    Returns:
        The Denoiser in eval mode with frozen weights; the raw network is ``.net`` and ᾱ comes
        from the config's schedule (linear or cosine, T steps).
    """
    dtype = torch.float32 if dtype is None else dtype
    path = _resolve_spec(spec)
    if path.is_dir():
        if config is not None:
            raise ValueError("a diffusers folder carries its own config; do not pass config=")
        return load_diffusers_folder(path, device=device, dtype=dtype)
    if path.suffix == ".safetensors":
        sidecar = path.with_suffix(".json")
        meta = read_json_object(sidecar, "the model config (pgdm convert writes it)") if sidecar.is_file() else {}
        prefix = meta.get("state_dict_prefix", "")
        if not isinstance(prefix, str):
            raise ValueError(f"{sidecar}: state_dict_prefix must be a string, got {prefix!r}")
        state_dict = {k.removeprefix(prefix): v for k, v in read_safetensors(path).items() if k.startswith(prefix)}
        if config is None and meta:
            config = _sidecar_config(sidecar, meta)
    else:
        state_dict = read_checkpoint(path)
    cfg = infer_config(state_dict) if config is None else _resolve_config(config)
    if cfg.is_super_resolution:
        raise ValueError(
            f"{cfg.name or 'this model'} is a super-resolution model that also takes a low-resolution image, "
            "which pgdm.Denoiser does not pass; build it with pgdm.models.create_model instead"
        )
    net = load_network(cfg, state_dict, device=device, dtype=dtype)
    return Denoiser(
        net,
        schedule_from_name(cfg.noise_schedule, cfg.diffusion_steps),
        learn_sigma=cfg.learn_sigma,
        class_cond=cfg.class_cond,
        image_size=cfg.image_size,
        channels=cfg.channels,
    ).to(device).eval()


def convert_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, config: ConfigLike | None = None
) -> ModelConfig:
    """Convert a ``.pt`` checkpoint to ``dst`` (``.safetensors``) plus its JSON config beside it.

    The config is ``config`` or inferred from the state dict's layout (:func:`infer_config`);
    the state dict is checked against it before anything is written. Tensors are written as
    stored (float32 for the published checkpoints). Returns the config written.
    """
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"destination must be a .safetensors file, got {str(dst)!r}")
    state_dict = read_checkpoint(src)
    cfg = infer_config(state_dict) if config is None else _resolve_config(config)
    with torch.device("meta"):
        net = cfg.build()
    check_state_dict(net, state_dict, cfg)
    save_file({k: state_dict[k].contiguous() for k in net.state_dict()}, dst, metadata={"format": "pt"})
    dst.with_suffix(".json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return cfg
