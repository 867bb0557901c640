"""Plot the training loss of a ``pgdm train`` checkpoint: per-step ε-MSE and its running mean, as a PNG.

    python benchmarks/plot_training_loss.py runs/photo32/checkpoint.pt docs/photo_training_loss.png --window 100
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a pgdm train checkpoint.pt")
    p.add_argument("png", type=Path, help="the plot to write")
    p.add_argument("--window", type=int, default=100, help="running-mean window in steps (default: %(default)s)")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state = torch.load(args.checkpoint, weights_only=True)
    losses = torch.tensor(state["losses"], dtype=torch.float64)  # (steps,)
    w = min(args.window, len(losses))
    running = losses.unfold(0, w, 1).mean(1)  # (steps - w + 1,)
    cfg = state["config"]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.4, alpha=0.35, label="per step")
    ax.plot(range(w, len(losses) + 1), running, lw=1.5, label=f"running mean ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("ε-MSE")
    ax.set_yscale("log")
    ax.set_title(f"pgdm train --dataset {cfg.get('dataset', 'fashion-mnist')}, batch {cfg['batch_size']}, lr {cfg['lr']}: "
                 f"{state['step']} steps, {state['seconds'] / 60:.0f} min", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    print(f"wrote {args.png}: {state['step']} steps, last-{w} mean loss {float(running[-1]):.4f}")


if __name__ == "__main__":
    main()
