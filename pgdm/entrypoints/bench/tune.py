"""``pgdm bench tune``: a method's per-task step size, chosen by PSNR on images kept apart from the evaluation set.

For each task and σ_y, every value of one option is run on ``--n`` images of the Fashion-MNIST **train** split
(evenly spaced over it; ``pgdm bench quality`` and ``benchmarks/`` evaluate on the test split) or of a folder,
one sample per image, and the value with the best mean PSNR is reported next to the method's current default
for that task. The table and ``tune.json`` go into ``--output``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

__all__ = ["add_tune_parser", "run_tune", "tune_images", "tune_cell"]


def add_tune_parser(kinds, methods_help_fmt) -> None:
    """Add ``bench tune`` to ``pgdm bench``'s subcommands."""
    t = kinds.add_parser("tune", formatter_class=methods_help_fmt, help="pick a method's per-task option on train images (PSNR)",
                         description=__doc__.split("\n\n")[1],
                         epilog="example:\n  pgdm bench tune --method dps --option scale --values 0.1,0.3,1 --tasks sr4 --steps 100 --n 16 -o tune_dps/")  # fmt: skip
    t.add_argument("--method", required=True, help="method name, e.g. dps or diffpir")
    t.add_argument("--option", required=True, help="the option to tune, e.g. scale (dps), lam or zeta (diffpir), or start_step")
    t.add_argument("--values", required=True, help="comma-separated candidate values")
    t.add_argument("--fixed", default="", help="other options held fixed, OPTION=VALUE[,…] (default: the per-task defaults)")
    t.add_argument("--start-step", type=int, help="start every run from h†(y) noised to this timestep (default: pure noise)")
    t.add_argument("--tasks", default="sr4,inpaint-center", help="comma-separated operator specs (default: %(default)s)")
    t.add_argument("--sigma-y", default="0", help="comma-separated σ_y on the [0, 1] scale (default: %(default)s)")
    t.add_argument("--steps", type=int, default=100, help="sampling steps (default: %(default)s)")
    t.add_argument("--n", type=int, default=16, help="images, evenly spaced over the split or the folder (default: %(default)s)")
    t.add_argument("--data", default="fashion-mnist-train", help="'fashion-mnist-train' or a folder of images (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--model", default="default", help="model name or checkpoint (default: %(default)s)")
    t.add_argument("--device", default="cpu")
    t.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    t.set_defaults(run=run_tune)


def tune_images(data: str, n: int, channels: int, size: int) -> torch.Tensor:
    """n images evenly spaced over ``data`` (``"fashion-mnist-train"``: the train split, or a folder), (n, C, H, W)
    in [-1, 1]."""
    from pgdm.data import load_fashion_mnist, to_model_range
    from pgdm.io import list_images, read_image

    if data == "fashion-mnist-train":
        images = to_model_range(load_fashion_mnist(split="train", size=size))
    else:
        images = torch.cat([read_image(p, channels) for p in list_images([data])] or [torch.empty(0, channels, size, size)])
    if images.shape[0] < n:
        raise ValueError(f"--n {n} asks for more images than {data} has ({images.shape[0]})")
    return images[torch.linspace(0, images.shape[0] - 1, n).round().long()]


def tune_cell(den, method: str, options: dict, task: str, sigma_y: float, steps: int, images: torch.Tensor, seed: int = 0,
              start_step: int | None = None) -> float:
    """Mean PSNR (dB, [0, 1] scale) of one sample per image restored by ``method`` with ``options``
    (``start_step``: as :class:`pgdm.Restorer`'s)."""
    from pgdm import metrics
    from pgdm.operators import GaussianNoise, parse
    from pgdm.sampler import Restorer

    op = parse(task, tuple(images.shape[1:]), seed=seed).to(images.device)
    y = op(images)
    if sigma_y > 0:
        y = GaussianNoise(sigma_y, seed=seed)(y)
    x = Restorer(den, steps=steps, method=method, options=options, start_step=start_step).restore(y, op, sigma_y=sigma_y, seed=seed)
    return float(metrics.psnr(x, images).mean())


def run_tune(args) -> int:
    from pgdm.methods import get_method
    from pgdm.models import load_model
    from pgdm.operators import parse
    from .cells import parse_list

    method = get_method(args.method)
    values = parse_list(args.values, float, "--values")
    fixed = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.fixed.split(",") if kv.strip())}
    is_start = args.option == "start_step"  # the shared sampler setting, not a method option
    method.options(fixed if is_start else {args.option: None, **fixed})  # one-line error for an unknown option
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sigmas = parse_list(args.sigma_y, float, "--sigma-y")
    den = load_model(args.model).to(args.device).eval()
    images = tune_images(args.data, args.n, den.channels, den.image_size or 32).to(args.device)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        op = parse(task, tuple(images.shape[1:]))
        default = args.start_step if is_start else method.resolve(method.options(fixed), op, args.steps).get(args.option)
        for sy in sigmas:
            scores = {}
            for v in values:
                t0 = time.perf_counter()
                opts, start = (fixed, int(v)) if is_start else ({**fixed, args.option: v}, args.start_step)
                scores[v] = tune_cell(den, method.name, opts, task, sy, args.steps, images, args.seed, start)
                print(f"{method.name} {task} σ_y={sy:g} {args.option}={v:g}: {scores[v]:.2f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)
            best = max(scores, key=scores.get)
            rows.append({"task": task, "sigma_y": sy, "default": default, "best": best, "psnr_best": scores[best],
                         "psnr_default": scores.get(default), "scores": scores})  # fmt: skip
    head = f"| task | σ_y | {' | '.join(f'{args.option}={v:g}' for v in values)} | best | default |"
    lines = [f"`pgdm bench tune --method {method.name} --option {args.option}`: PSNR (dB), {args.n} images of {args.data}, "
             f"{args.steps} steps, seed {args.seed}", "", head, "|" + "---|" * (len(values) + 4)]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r['scores'][v]:.2f}" for v in values)
        lines.append(f"| {r['task']} | {r['sigma_y']:g} | {cells} | {r['best']:g} | {r['default'] if r['default'] is None else format(r['default'], 'g')} |")
    table = "\n".join(lines) + "\n"
    (args.output / "tune.md").write_text(table)
    meta = {"method": method.name, "option": args.option, "fixed": fixed, "start_step": args.start_step, "steps": args.steps, "n": args.n, "seed": args.seed,
            "data": args.data, "rows": [r | {"scores": {str(k): s for k, s in r["scores"].items()}} for r in rows]}  # fmt: skip
    (args.output / "tune.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table)
    return 0
