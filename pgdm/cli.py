"""The ``pgdm`` command line: ``pgdm train``, ``pgdm restore``, ``pgdm degrade``, ``pgdm demo``."""
from __future__ import annotations

import argparse
import sys

from . import train as train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgdm", description="Pseudoinverse-guided diffusion models for image restoration.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "train",
        help="train an ADM ε-prediction model on Fashion-MNIST",
        description="Train the default-model architecture on Fashion-MNIST (resumable).",
        epilog="example: pgdm train --steps 20000 --out runs/fashion32 --export pgdm/assets/default/model.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_cmd.add_arguments(p)
    p.set_defaults(run=train_cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
