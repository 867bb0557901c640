"""``pgdm serve``: its options and the command. Imports nothing of the server extra until it runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import add_engine_options, add_model_options
from ..config import ModelSettings

__all__ = ["add_parser"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``pgdm``'s subparsers."""
    p = subparsers.add_parser(
        "serve", help="serve restorations over HTTP (dynamic batching)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="An HTTP server (FastAPI + uvicorn) restoring uploaded images: POST /v1/restore, GET /healthz,\n"
        "/readyz, /metrics (Prometheus). Concurrent requests of the same task and size run as one batch.\n"
        "Needs pip install 'pgdm[serve]'. SIGTERM stops accepting and answers every request in flight first.",
        epilog="examples:\n  pgdm serve --model default --port 8000\n"
        "  pgdm serve --max-batch 32 --max-wait-ms 20 --token-file token.txt\n"
        "  curl -F task=sr4 -F image=@low.png -F seed=0 http://127.0.0.1:8000/v1/restore -o restored.png",
    )  # fmt: skip
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free port, printed at start)")
    add_engine_options(p)
    p.add_argument("--steps", type=int, default=100, help="sampling steps when a request names none (default: %(default)s)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM η when a request names none (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=16, help="rows (images × samples) per batch (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=256, help="pending requests before answering 429 (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="largest request body (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest uploaded image in pixels (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=1000, help="most steps a request may ask for (default: %(default)s)")
    p.add_argument("--max-samples", type=int, default=16, help="most num_samples a request may ask for (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before a request is answered 504 (default: %(default)s)")
    p.add_argument("--token-file", type=Path, help="file holding a bearer token that /v1/ and /metrics requests must send")
    p.add_argument("--warmup-task", default="sr2", help="task whose step is compiled/captured before /readyz says ready")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")
    p.set_defaults(run=run)
    return p


def _batch_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, and ``max_batch``: the sizes the engine compiles or captures."""
    return tuple(sorted({2**i for i in range(max_batch.bit_length()) if 2**i < max_batch} | {max_batch}))


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed); ValueError when missing or empty."""
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the token file ({err.strerror})") from None
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"{path}: the token file must hold one token without spaces")
    return token


def run(args) -> int:
    """Load the model, build the app, serve until SIGTERM/SIGINT."""
    try:
        from pgdm.engine import EngineConfig

        from .app import ServeConfig, create_app
        from .server import serve
    except ImportError as err:
        raise ValueError(f"the server needs its extra ({err.name} is missing): pip install 'pgdm[serve]'") from None
    if args.max_batch < 1 or args.max_queue < 0:
        raise ValueError("--max-batch must be ≥ 1 and --max-queue ≥ 0")
    token = read_token(args.token_file) if args.token_file else None
    engine = EngineConfig(
        steps=args.steps, eta=args.eta, backend=args.backend, precision=args.precision, channels_last=args.channels_last,
        batch_sizes=_batch_sizes(args.max_batch),
    )  # fmt: skip
    config = ServeConfig(
        engine=engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes, max_pixels=args.max_pixels, max_steps=args.max_steps,
        max_samples=args.max_samples, timeout_s=args.timeout, token=token, warmup_task=args.warmup_task,
    )  # fmt: skip
    denoiser = ModelSettings(args.model, args.config, device=args.device).load()
    serve(create_app(denoiser, config), args.host, args.port, args.log_level)
    return 0
