"""Running the app with uvicorn: in the foreground (``pgdm serve``; SIGTERM/SIGINT drain in-flight requests)
or on a background thread (:class:`BackgroundServer`, for embedding, notebooks and tests)."""
from __future__ import annotations

import threading

import uvicorn

__all__ = ["serve", "BackgroundServer"]


def _server(app, host: str, port: int, log_level: str) -> tuple[uvicorn.Server, object, str]:
    """A uvicorn server and its bound socket (``port`` 0: a free port), with the URL it answers on."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None)
    sock = config.bind_socket()
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    return uvicorn.Server(config), sock, url


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then stop accepting, answer every request in flight, and return.

    Prints ``listening on URL`` (with the real port when ``port`` is 0) once the socket is bound.
    """
    server, sock, url = _server(app, host, port, log_level)
    print(f"pgdm serve: listening on {url}", flush=True)
    server.run(sockets=[sock])


class BackgroundServer:
    """``app`` served by uvicorn on a thread of this process, as a context manager; ``url`` is where it answers.

    Example:
        >>> with BackgroundServer(create_app(pgdm.load_model("default"))) as server:
        ...     httpx.get(f"{server.url}/healthz")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.server, self._sock, self.url = _server(app, host, port, log_level)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, name="pgdm-uvicorn", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self.server.started:
            raise RuntimeError("the server did not start (see its log)")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True  # as SIGTERM does: drain, then the app's shutdown
        self._thread.join()
        self._sock.close()
