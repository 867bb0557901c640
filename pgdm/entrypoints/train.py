"""Train an ADM ε-prediction model (the default model: Fashion-MNIST 32×32 grayscale).

Plain DDPM training (Ho et al. 2020): uniform t, ε-MSE, AdamW with warm-up, gradient clipping,
an EMA of the weights. Checkpoints hold model, EMA, optimiser, step and RNG state and are written
atomically; ``resume`` continues bit-for-bit from the last one. ``export`` writes the EMA weights as
safetensors plus a JSON config that ``pgdm.load_model`` reads.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from pgdm import schedules
from pgdm.data import FASHION_MNIST_DIR, load_fashion_mnist, to_model_range
from pgdm.models.presets import ModelConfig

__all__ = ["TrainConfig", "DEFAULT_NETWORK", "train", "export_ema", "add_arguments", "run"]

# The default model (guided-diffusion create_model kwargs): 1.37 M parameters, sized so a CPU run
# of a few hours gives a usable prior on 32×32 grayscale images.
DEFAULT_NETWORK: dict = {
    "image_size": 32,
    "channels": 1,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2,2",
    "attention_resolutions": "8",
    "num_heads": 4,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "dropout": 0.1,
    "learn_sigma": False,
    "class_cond": False,
}


# Settings a resumed run may change; any other difference from the checkpoint's config is refused.
_RESUMABLE = frozenset({"steps", "checkpoint_every", "threads", "out_dir", "data"})


@dataclass
class TrainConfig:
    out_dir: str = "runs/fashion32"
    data: str = str(FASHION_MNIST_DIR)
    image_size: int = 32
    steps: int = 20000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 200
    ema_decay: float = 0.999
    schedule: str = "linear"
    T: int = 1000
    seed: int = 0
    checkpoint_every: int = 250
    threads: int = 0
    network: dict = field(default_factory=lambda: dict(DEFAULT_NETWORK))

    def model_config(self) -> ModelConfig:
        return ModelConfig("adm", {**self.network, "image_size": self.image_size}, self.schedule, self.T, name="fashion32")


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> Path:
    """Train to ``cfg.steps``, checkpointing to ``cfg.out_dir/checkpoint.pt``; returns that path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    images = load_fashion_mnist(cfg.data, "train", cfg.image_size)
    acp = schedules.from_name(cfg.schedule, cfg.T).float()

    torch.manual_seed(cfg.seed)
    net = cfg.model_config().build()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, losses, elapsed = 0, [], 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        changed = sorted(k for k, v in asdict(cfg).items() if k not in _RESUMABLE and state["config"].get(k) != v)
        if changed:
            raise ValueError(f"{ckpt_path} was trained with other settings ({', '.join(changed)}); use another --out or --no-resume")
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, elapsed = state["step"], state["losses"], state["seconds"]
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    net.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    start = time.time()
    while step < cfg.steps:
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        x0 = to_model_range(images[idx])
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, cfg.T, (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = (net(xt, t) - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), net.parameters()):
                p_ema.lerp_(p, 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _atomic_save(
                {
                    "model": net.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "losses": losses,
                    "config": asdict(cfg),
                    "seconds": elapsed + time.time() - start,
                },
                ckpt_path,
            )
    bar.close()
    return ckpt_path


def export_ema(checkpoint: str | Path, dst: str | Path) -> Path:
    """Write the EMA weights of a training checkpoint as ``dst`` (.safetensors) + the JSON config beside it.

    The JSON is :meth:`ModelConfig.to_dict` (what ``pgdm.load_model`` reads) plus a ``training`` record.
    """
    state = torch.load(checkpoint, weights_only=True)
    cfg = TrainConfig(**state["config"])
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state["ema"].items()}, str(dst), metadata={"format": "pt"})
    recent = state["losses"][-1000:]
    meta = cfg.model_config().to_dict() | {
        "training": {
            "command": f"pgdm train --steps {cfg.steps} --batch {cfg.batch_size} --lr {cfg.lr} --ema {cfg.ema_decay} --schedule {cfg.schedule}",
            "dataset": "Fashion-MNIST train split (60 000 images), 28×28 padded to 32×32 with black",
            "steps": state["step"],
            "batch_size": cfg.batch_size,
            "seconds": round(state["seconds"]),
            "mean_loss_last_1000_steps": sum(recent) / max(1, len(recent)),
        }
    }
    dst.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", default=d.data, help="folder with the Fashion-MNIST IDX .gz files (default: %(default)s)")
    p.add_argument("--out", default=d.out_dir, help="run folder for checkpoints (default: %(default)s)")
    p.add_argument("--size", type=int, default=d.image_size, help="image size after padding (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimiser steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch_size, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    p.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay (default: %(default)s)")
    p.add_argument("--schedule", choices=["linear", "cosine"], default=d.schedule, help="noise schedule (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    p.add_argument("--export", metavar="FILE.safetensors", help="after training, write the EMA weights + JSON config here")


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        out_dir=args.out,
        data=args.data,
        image_size=args.size,
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        ema_decay=args.ema,
        schedule=args.schedule,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
    )
    ckpt = train(cfg, resume=not args.no_resume)
    if args.export:
        print(f"exported {export_ema(ckpt, args.export)}")
    return 0
