"""Train an ADM ε-prediction model: the default model (Fashion-MNIST 32×32 grayscale) or the photo model
(32×32 RGB crops of the colour photos shipped with scikit-image and scikit-learn), by ``--dataset``.

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
from pgdm.classifier import CLASSIFIER_PATH, FashionClassifier
from pgdm.data import FASHION_MNIST_DIR, PHOTO_HELD_OUT, PHOTO_TRAIN, PhotoCrops, load_fashion_mnist, load_fashion_mnist_labels, to_model_range
from pgdm.models.presets import ModelConfig

__all__ = ["TrainConfig", "DATASETS", "DEFAULT_NETWORK", "PHOTO_NETWORK", "train", "export_ema", "add_arguments", "run",
           "train_classifier", "add_classifier_arguments", "run_classifier"]

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

# The photo model: the same network on RGB, without dropout (a short run on many distinct crops does not overfit).
PHOTO_NETWORK: dict = {**DEFAULT_NETWORK, "channels": 3, "dropout": 0.0}

# --dataset name → (network, model name, description written into the exported JSON).
DATASETS: dict[str, tuple[dict, str, str]] = {
    "fashion-mnist": (DEFAULT_NETWORK, "fashion32", "Fashion-MNIST train split (60 000 images), 28×28 padded to 32×32 with black"),
    "photos": (
        PHOTO_NETWORK,
        "photo32",
        f"random crops of {', '.join(PHOTO_TRAIN)} (skimage.data, sklearn sample images), downscaled by 1-4× "
        f"(7 log-spaced factors), flipped and rotated by k·90°; held out: {', '.join(PHOTO_HELD_OUT)}",
    ),
}


# Settings a resumed run may change; any other difference from the checkpoint's config is refused.
_RESUMABLE = frozenset({"steps", "checkpoint_every", "threads", "out_dir", "data"})


@dataclass
class TrainConfig:
    out_dir: str = "runs/fashion32"
    dataset: str = "fashion-mnist"
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
        name = DATASETS[self.dataset][1]
        return ModelConfig("adm", {**self.network, "image_size": self.image_size}, self.schedule, self.T, name=name)

    def batches(self):
        """A function ``gen -> x0``: one training batch (batch_size, C, image_size, image_size) float32 in [-1, 1]."""
        if self.dataset == "photos":
            crops = PhotoCrops(size=self.image_size)
            return lambda gen: crops.sample(self.batch_size, gen)
        if self.dataset != "fashion-mnist":
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        images = load_fashion_mnist(self.data, "train", self.image_size)

        def fashion_batch(gen: torch.Generator) -> torch.Tensor:
            idx = torch.randint(0, images.shape[0], (self.batch_size,), generator=gen)
            x0 = to_model_range(images[idx])
            flip = torch.rand(self.batch_size, generator=gen) < 0.5
            return torch.where(flip[:, None, None, None], x0.flip(-1), x0)

        return fashion_batch


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
    next_batch = cfg.batches()
    acp = schedules.from_name(cfg.schedule, cfg.T).float()

    torch.manual_seed(cfg.seed)
    net = cfg.model_config().build()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, losses, elapsed = 0, [], 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        saved = asdict(TrainConfig(**state["config"]))  # fills settings added since the checkpoint with their defaults
        changed = sorted(k for k, v in asdict(cfg).items() if k not in _RESUMABLE and saved[k] != v)
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
        x0 = next_batch(gen)
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
            "command": f"pgdm train --dataset {cfg.dataset} --steps {cfg.steps} --batch {cfg.batch_size} --lr {cfg.lr} "
            f"--ema {cfg.ema_decay} --schedule {cfg.schedule}",
            "dataset": DATASETS[cfg.dataset][2],
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
    p.add_argument("--dataset", choices=list(DATASETS), default=d.dataset,
                   help="fashion-mnist: the default model (1 channel); photos: the photo model (RGB crops of the photos in "
                   "scikit-image and scikit-learn) (default: %(default)s)")  # fmt: skip
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
        dataset=args.dataset,
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
        network=dict(DATASETS[args.dataset][0]),
    )
    ckpt = train(cfg, resume=not args.no_resume)
    if args.export:
        print(f"exported {export_ema(ckpt, args.export)}")
    return 0


def train_classifier(dst: str | Path = CLASSIFIER_PATH, *, data: str | Path = FASHION_MNIST_DIR, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, limit: int | None = None, progress: bool = True) -> dict:
    """Train :class:`pgdm.classifier.FashionClassifier` on the Fashion-MNIST training split (random horizontal flips,
    Adam, the learning rate cosine-decayed to 0), scale its features to RMS 1 on the first 10 000 training images,
    then measure its accuracy on the test split. Writes ``dst``
    (.safetensors) and the JSON record beside it, which it returns. ``limit``: use only the first images of
    each split (for tests)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train = to_model_range(load_fashion_mnist(data, "train")[:limit])  # (N, 1, 32, 32), the default model's form
    y_train = load_fashion_mnist_labels(data, "train")[:limit]
    net = FashionClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    per_epoch = -(-x_train.shape[0] // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
    start = time.time()
    net.train()
    for _ in tqdm(range(epochs), desc="train classifier", unit="epoch", disable=not progress):
        order = torch.randperm(x_train.shape[0], generator=gen)
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i : i + batch_size]
            x = x_train[idx]
            flip = torch.rand(x.shape[0], generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = torch.nn.functional.cross_entropy(net(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.time() - start
    net.eval()
    net.set_feature_scale_(x_train[:10_000])
    x_test = to_model_range(load_fashion_mnist(data, "test")[:limit])
    y_test = load_fashion_mnist_labels(data, "test")[:limit]
    with torch.no_grad():
        predicted = torch.cat([net(x_test[i : i + 1000]).argmax(1) for i in range(0, x_test.shape[0], 1000)])
    record = {
        "format": "pgdm-classifier-v1",
        "architecture": "FashionClassifier (pgdm.classifier): 3 conv + 2 linear layers, 64 penultimate features",
        "parameters": sum(p.numel() for p in net.parameters()),
        "input": "(B, 1, 32, 32) in [-1, 1]: Fashion-MNIST 28×28 padded with black, as the default model's images",
        "training": {
            "command": f"pgdm train-classifier --epochs {epochs} --batch {batch_size} --lr {lr} --seed {seed}"
            + ("" if Path(dst) == CLASSIFIER_PATH else f" --export {dst}"),
            "dataset": f"Fashion-MNIST train split ({x_train.shape[0]} images), random horizontal flips",
            "seconds": round(seconds),
        },
        "test_accuracy": float((predicted == y_test).double().mean()),
        "test_images": int(y_test.shape[0]),
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(dst), metadata={"test_accuracy": str(record["test_accuracy"])})
    dst.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def add_classifier_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(FASHION_MNIST_DIR), help="folder with the Fashion-MNIST IDX .gz files (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training split (default: %(default)s)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--export", default=str(CLASSIFIER_PATH), metavar="FILE.safetensors", help="weights to write, JSON beside (default: the shipped asset)")


def run_classifier(args: argparse.Namespace) -> int:
    record = train_classifier(args.export, data=args.data, epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed)
    print(f"exported {args.export}: test accuracy {record['test_accuracy']:.4f} on {record['test_images']} test images")
    return 0
