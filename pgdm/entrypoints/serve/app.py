"""The HTTP API (FastAPI): ``POST /v1/restore``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Every error is a one-line JSON body ``{"error": "..."}`` with a 4xx status (5xx only for a failure inside
the server: a NaN in sampling, an engine error), never a traceback. Requests larger than the byte limit get
413 before their body is read when they declare a Content-Length, and as soon as they pass it otherwise.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgdm.denoiser import Denoiser
from pgdm.engine import EngineConfig
from pgdm.operators import parse

from .batcher import Closed, DynamicBatcher, EnginePool, QueueFull, SamplingError
from .metrics import ServerMetrics
from .uploads import UploadError, decode_upload, encode_png

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("pgdm.serve")
PROTECTED = ("/v1/", "/metrics")  # paths that need the bearer token when one is set; health checks stay open


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings: the engine's (``engine.steps``/``engine.eta`` are the request defaults), batching and limits.

    Attributes:
        max_batch: rows (images × samples) per batch at most; ``max_wait_ms``: how long a request waits for others.
        max_queue: pending requests at most (more get 429 with Retry-After).
        max_body_bytes, max_pixels: an upload over either gets 413.
        max_steps, max_samples: the largest ``steps`` and ``num_samples`` a request may ask for.
        timeout_s: a request not answered by then gets 504 (and is dropped if it has not started).
        token: the bearer token every ``/v1/`` and ``/metrics`` request must carry (None: no authentication).
        warmup_task: compile (``compile``) or capture (``cudagraph``) the step for this task at start-up;
            ``/readyz`` answers 200 once that is done.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_body_bytes: int = 16 * 2**20
    max_pixels: int = 4096 * 4096
    max_steps: int = 1000
    max_samples: int = 16
    timeout_s: float = 300.0
    token: str | None = None
    warmup_task: str = "sr2"


@dataclass
class _State:
    config: ServeConfig
    image_shape: tuple[int, int, int]
    pool: EnginePool
    metrics: ServerMetrics
    batcher: DynamicBatcher | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    warmup_error: str | None = None


class _Guard:
    """ASGI middleware: metrics of every request, the bearer token, the request-size limit."""

    def __init__(self, app, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path, status = time.perf_counter(), scope["path"], 500
        cfg = self.state.config

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        restore = path.startswith("/v1/")
        if restore:
            self.state.metrics.in_flight.inc()
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if cfg.token is not None and path.startswith(PROTECTED) and not _token_ok(headers.get("authorization", ""), cfg.token):
                refusal = _error(401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')", {"WWW-Authenticate": "Bearer"})
                return await refusal(scope, receive, send_counted)
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > cfg.max_body_bytes:
                return await _error(413, f"request body of {length} bytes is over the limit of {cfg.max_body_bytes}")(scope, receive, send_counted)
            await self.app(scope, _limited(receive, cfg.max_body_bytes), send_counted)
        finally:
            if restore:
                self.state.metrics.in_flight.dec()
            self.state.metrics.observe(path, status, time.perf_counter() - start)


def _token_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())  # constant time


def _limited(receive, limit: int):
    """``receive`` that raises 413 once the body passes ``limit`` bytes (bodies without a Content-Length)."""
    received = 0

    async def receive_limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body is over the limit of {limit} bytes")
        return message

    return receive_limited


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _one_line(message: object) -> str:
    """An error message (an exception or text) on one line."""
    return " ".join(str(message).split()) or type(message).__name__


def create_app(denoiser: Denoiser, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving ``denoiser`` (its weights are frozen and, for bf16/fp16, cast in place).

    The batcher starts with the app's lifespan and, on shutdown, finishes every request it accepted.
    """
    config = config or ServeConfig()
    if denoiser.image_size is None:
        raise ValueError("the server needs a model with a fixed image size")
    pool = EnginePool(denoiser, config.engine)
    state = _State(config, (denoiser.channels, denoiser.image_size, denoiser.image_size), pool, ServerMetrics(lambda: 0))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher = DynamicBatcher(pool, config.max_batch, config.max_wait_ms / 1000, config.max_queue, state.metrics.batch_size.observe)
        state.metrics.queue_depth.set_function(lambda: state.batcher.depth)
        threading.Thread(target=_warm_up, args=(state,), name="pgdm-warmup", daemon=True).start()
        try:
            yield
        finally:
            state.ready.clear()
            await run_in_threadpool(state.batcher.close)  # finishes what was accepted

    app = FastAPI(title="pgdm", summary="ΠGDM image restoration", lifespan=lifespan)
    app.add_middleware(_Guard, state=state)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, _one_line(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error")
        return _error(500, f"internal error: {type(err).__name__}")

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once warm-up is done and until shutdown starts, else 503."""
        if state.ready.is_set():
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, **({"error": state.warmup_error} if state.warmup_error else {})}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/restore", responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def restore(
        request: Request,
        task: Annotated[str, Form(description="operator spec, as `pgdm restore TASK`: sr4, jpeg10, inpaint-center, sr2+jpeg20, …")],
        image: Annotated[UploadFile, File(description="the degraded image: PNG, or the .jpg itself for a JPEG task")],
        mask: Annotated[UploadFile | None, File(description="inpainting mask, white = observed")] = None,
        steps: Annotated[int | None, Form(ge=1)] = None,
        eta: Annotated[float | None, Form(ge=0, le=1)] = None,
        sigma_y: Annotated[float, Form(ge=0, description="measurement noise std on the [0, 1] pixel scale")] = 0.0,
        seed: Annotated[int, Form()] = 0,
        num_samples: Annotated[int, Form(ge=1)] = 1,
        class_label: Annotated[int | None, Form()] = None,
        fit: Annotated[Literal["resize", "crop"] | None, Form()] = None,
    ) -> Response:
        """Restore one image. Answers a PNG, or JSON (``Accept: application/json``) with the PNG in base64,
        the consistency RMS of h(x̂) − y, and timings."""
        received = time.perf_counter()
        steps = config.engine.steps if steps is None else steps
        if steps > config.max_steps or num_samples > config.max_samples:
            raise HTTPException(422, f"steps must be ≤ {config.max_steps} and num_samples ≤ {config.max_samples}; got {steps} and {num_samples}")
        data, mask_data = await image.read(), (await mask.read() if mask is not None else None)
        try:
            template = parse(task, state.image_shape, seed=seed)
            op, y = await run_in_threadpool(decode_upload, template, data, state.image_shape, mask=mask_data, fit=fit, max_pixels=config.max_pixels)
            future = await run_in_threadpool(
                state.batcher.submit, y, op, sigma_y, seed, class_label, num_samples=num_samples, steps=steps, eta=eta
            )
        except UploadError as err:
            raise HTTPException(err.status, _one_line(err)) from None
        except QueueFull as err:
            raise HTTPException(429, _one_line(err), headers={"Retry-After": str(err.retry_after)}) from None
        except Closed as err:
            raise HTTPException(503, _one_line(err)) from None
        except ValueError as err:
            raise HTTPException(400, _one_line(err)) from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not answered within {config.timeout_s:g} s") from None
        except SamplingError as err:
            raise HTTPException(500, _one_line(err)) from None
        png = await run_in_threadpool(encode_png, result.x[0].cpu())
        rms = result.consistency_rms[0]
        if "application/json" not in request.headers.get("accept", ""):
            return Response(png, media_type="image/png", headers={"X-Consistency-RMS": f"{rms:.6g}"})
        timing = {"queued_s": result.queued_s, "run_s": result.run_s, "total_s": time.perf_counter() - received}
        return JSONResponse({"image": base64.b64encode(png).decode("ascii"), "consistency_rms": rms, "seed": seed, "steps": steps, "timing": timing})

    return app


def _warm_up(state: _State) -> None:
    """Compile or capture the default engine's step for the warm-up task at every batch size, then mark ready."""
    try:
        op = parse(state.config.warmup_task, state.image_shape).to(state.pool.device)
        engine = state.pool.default
        with torch.no_grad():
            seconds = engine.warmup(op, state.image_shape, [b for b in engine.config.batch_sizes if b <= state.config.max_batch] or None)
        log.info("warm-up (%s, %s backend) took %.1f s", state.config.warmup_task, engine.config.backend, seconds)
        state.ready.set()
    except Exception as err:  # the server still answers; /readyz says why it is not ready
        state.warmup_error = _one_line(err)
        log.error("warm-up failed: %s", state.warmup_error)
