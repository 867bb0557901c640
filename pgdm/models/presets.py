"""Model configs: a dataclass plus the table of published checkpoints' settings.

Each preset is the complete ``create_model`` kwargs of one published model (taken from the
state-dict manifests in ``tests/fixtures/adm``) with its diffusion schedule.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal


from .adm import ADMUNet, check_create_model_kwargs, create_model
from .ddpm import DDPMUNet, check_ddpm_kwargs

__all__ = ["ModelConfig", "PRESETS"]

Architecture = Literal["adm", "ddpm"]
# Settings that never change what an eval-mode network computes.
_NO_EFFECT_KEYS = frozenset({"dropout", "use_fp16", "use_checkpoint"})

# The type of every config key, as a description and a check (bool is not taken for an int).
_INT = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
_BOOL = ("true or false", lambda v: isinstance(v, bool))
_NUMBER = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
_INTS = ("a list of integers", lambda v: isinstance(v, (list, tuple)) and all(_INT[1](i) for i in v))
_NUMBERS_OR_TEXT = ('a list of numbers or a string such as "1,2,2"', lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(_NUMBER[1](i) for i in v)))
_INTS_OR_TEXT = ('a list of integers, an integer or a string such as "32,16,8"', lambda v: isinstance(v, str) or _INT[1](v) or _INTS[1](v))
_KEY_TYPES = {
    "adm": {
        **dict.fromkeys(("num_channels", "num_res_blocks", "image_size", "large_size", "small_size", "num_heads",
                         "num_head_channels", "num_heads_upsample", "channels"), _INT),
        **dict.fromkeys(("learn_sigma", "class_cond", "use_checkpoint", "use_scale_shift_norm", "resblock_updown", "use_fp16",
                         "use_new_attention_order"), _BOOL),
        "dropout": _NUMBER, "channel_mult": _NUMBERS_OR_TEXT, "attention_resolutions": _INTS_OR_TEXT,
    },
    "ddpm": {
        **dict.fromkeys(("ch", "out_ch", "num_res_blocks", "resolution", "in_channels"), _INT),
        "ch_mult": _INTS, "attn_resolutions": _INTS, "dropout": _NUMBER, "resamp_with_conv": _BOOL,
    },
}  # fmt: skip


def _check_key_types(architecture: str, kwargs: Mapping[str, Any]) -> None:
    """A one-line ValueError naming the first config key whose value has the wrong type (``"image_size": "big"``)."""
    for key, value in kwargs.items():
        what, ok = _KEY_TYPES[architecture].get(key, ("", lambda v: True))
        if value is not None and not ok(value):
            raise ValueError(f"config key {key!r} must be {what}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a network and wrap it into a :class:`pgdm.Denoiser`.

    Attributes:
        architecture: ``"adm"`` (guided-diffusion UNet) or ``"ddpm"`` (DDPM/DDIM/DDRM UNet).
        kwargs: ``create_model`` kwargs (adm) or :class:`DDPMUNet` kwargs (ddpm).
        noise_schedule: ``"linear"`` or ``"cosine"`` (:func:`pgdm.schedules.from_name`).
        diffusion_steps: T, the length of the ᾱ table.
        name: the preset name, if any.
    """

    architecture: Architecture
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        if self.architecture == "adm":
            check_create_model_kwargs(dict(self.kwargs))
        elif self.architecture == "ddpm":
            check_ddpm_kwargs(dict(self.kwargs))
        else:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected 'adm' or 'ddpm'")
        _check_key_types(self.architecture, self.kwargs)
        if not _INT[1](self.diffusion_steps) or self.diffusion_steps < 2:
            raise ValueError(f"diffusion_steps must be an integer ≥ 2, got {self.diffusion_steps!r}")
        if self.noise_schedule not in ("linear", "cosine"):
            raise ValueError(f"unknown noise_schedule {self.noise_schedule!r}; expected 'linear' or 'cosine'")

    @classmethod
    def from_name(cls, name: str) -> ModelConfig:
        """The preset called ``name`` (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model config {name!r}; presets: {sorted(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """From the JSON config stored beside a ``.safetensors`` file, or from bare ``create_model`` kwargs.

        The JSON form is ``{"architecture": "adm", "config": {...kwargs}, "diffusion":
        {"noise_schedule": "linear", "diffusion_steps": 1000}, "name": ...}``; ``architecture``
        defaults to ``"adm"`` and ``diffusion`` to a linear schedule over 1000 steps, so the
        fixtures' and manifests' JSON files are accepted as they are. A dict without a
        ``"config"`` key is taken as ADM ``create_model`` kwargs with the linear schedule.
        """
        if "config" not in d:
            return cls("adm", dict(d))
        diffusion = d.get("diffusion", {})
        if not isinstance(d["config"], Mapping) or not isinstance(diffusion, Mapping):
            raise ValueError('"config" and "diffusion" must be JSON objects')
        return cls(
            architecture=d.get("architecture", "adm"),
            kwargs=dict(d["config"]),
            noise_schedule=diffusion.get("noise_schedule", "linear"),
            diffusion_steps=diffusion.get("diffusion_steps", 1000),
            name=d.get("name"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form read by :meth:`from_dict`."""
        d: dict[str, Any] = {
            "format": "pgdm-model-v1",
            "architecture": self.architecture,
            "config": dict(self.kwargs),
            "diffusion": {"noise_schedule": self.noise_schedule, "diffusion_steps": self.diffusion_steps},
        }
        if self.name is not None:
            d["name"] = self.name
        return d

    def build(self) -> ADMUNet | DDPMUNet:
        """The float32 network on the current default device (wrap in ``with torch.device("meta"):`` to skip allocation)."""
        if self.architecture == "adm":
            return create_model(**self.kwargs)
        return DDPMUNet(**self.kwargs)

    def behaviour_key(self) -> str:
        """A string equal for two configs exactly when their eval-mode networks and schedules are the same."""
        kwargs = {k: v for k, v in self.kwargs.items() if k not in _NO_EFFECT_KEYS}
        return json.dumps([self.architecture, kwargs, self.noise_schedule, self.diffusion_steps], sort_keys=True)

    @property
    def is_super_resolution(self) -> bool:
        """True for guided-diffusion's upsamplers, which also take a low-resolution image."""
        return self.architecture == "adm" and "large_size" in self.kwargs

    @property
    def image_size(self) -> int:
        """Training resolution (square)."""
        if self.architecture == "ddpm":
            return int(self.kwargs["resolution"])
        return int(self.kwargs["large_size"] if self.is_super_resolution else self.kwargs["image_size"])

    @property
    def channels(self) -> int:
        """Image channels."""
        return int(self.kwargs.get("in_channels" if self.architecture == "ddpm" else "channels", 3))

    @property
    def learn_sigma(self) -> bool:
        """The network also outputs the variance interpolation v (2·channels outputs)."""
        if self.architecture == "ddpm":
            return int(self.kwargs["out_ch"]) == 2 * self.channels
        return bool(self.kwargs.get("learn_sigma", False))

    @property
    def class_cond(self) -> bool:
        """The network takes ImageNet class labels."""
        return self.architecture == "adm" and bool(self.kwargs.get("class_cond", False))


def _adm(name: str, noise_schedule: str = "linear", **kwargs: Any) -> ModelConfig:
    return ModelConfig("adm", kwargs, noise_schedule=noise_schedule, name=name)


_COMMON = dict(learn_sigma=True, use_checkpoint=False, num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True)
_GUIDED = dict(_COMMON, channel_mult="", use_new_attention_order=False, attention_resolutions="32,16,8", num_res_blocks=2)
_IMAGENET_256 = dict(_GUIDED, image_size=256, num_channels=256, num_heads=4, num_head_channels=64, dropout=0.0, use_fp16=True)
_UPSAMPLER = dict(_COMMON, num_channels=192, num_res_blocks=2, class_cond=True, num_heads=4, dropout=0.0, use_fp16=True)

PRESETS: dict[str, ModelConfig] = {
    c.name: c  # type: ignore[misc]
    for c in [
        # guided-diffusion README (github.com/openai/guided-diffusion), MODEL_FLAGS over model_and_diffusion_defaults().
        _adm("256x256_diffusion_uncond", **_IMAGENET_256, class_cond=False),  # also DPS imagenet256.pt, DDRM imagenet_256.yml
        _adm("256x256_diffusion", **_IMAGENET_256, class_cond=True),
        _adm("lsun_256", **dict(_IMAGENET_256, dropout=0.1), class_cond=False),  # lsun_{bedroom,cat,horse}.pt
        _adm(
            "64x64_diffusion", "cosine", **dict(_GUIDED, use_new_attention_order=True, num_res_blocks=3),
            image_size=64, num_channels=192, num_heads=4, num_head_channels=64, class_cond=True, dropout=0.1, use_fp16=True,
        ),
        _adm(
            "128x128_diffusion", **_GUIDED,
            image_size=128, num_channels=256, num_heads=4, num_head_channels=-1, class_cond=True, dropout=0.0, use_fp16=True,
        ),
        _adm(
            "512x512_diffusion", **_GUIDED,
            image_size=512, num_channels=256, num_heads=4, num_head_channels=64, class_cond=True, dropout=0.0, use_fp16=False,
        ),
        _adm("64_256_upsampler", **_UPSAMPLER, large_size=256, small_size=64, attention_resolutions="32,16,8", num_head_channels=-1),
        _adm("128_512_upsampler", **_UPSAMPLER, large_size=512, small_size=128, attention_resolutions="32,16", num_head_channels=64),
        # DPS configs/model_config.yaml (ffhq_10m.pt).
        _adm(
            "ffhq_10m", **dict(_GUIDED, attention_resolutions="16", num_res_blocks=1),
            image_size=256, num_channels=128, num_heads=4, num_head_channels=64, class_cond=False, dropout=0.0, use_fp16=False,
        ),
        # DDRM configs/celeba_hq.yml (celeba_hq.ckpt), model type "simple".
        ModelConfig(
            "ddpm",
            dict(
                ch=128, out_ch=3, ch_mult=[1, 1, 2, 2, 4, 4], num_res_blocks=2, attn_resolutions=[16],
                dropout=0.0, resamp_with_conv=True, in_channels=3, resolution=256,
            ),
            name="ddrm_celeba_hq_ddpm",
        ),
    ]
}
