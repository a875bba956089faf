"""The Insights web server: a FastAPI app built per visualizer, run by uvicorn.

Routes (all answers JSON except the page and its static files):

    GET  /                  the page (static/index.html)
    GET  /static/<name>     one of the files in this package's static/ folder
    GET  /api/config        classes, models, features, methods with argument specs
    POST /api/fetch         next examples that pass the filters, attributed
    POST /api/attribute     examples already fetched, attributed again

Every request is checked; a bad one gets a 4xx answer ``{"error": "..."}``.
State lives in the visualizer and the app built for it, never in this module.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from .._engine.errors import ArgumentValueError
from .methods import RequestError

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MAX_BODY = 1 << 20  # bytes; requests are small JSON objects
_MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _static_files() -> MappingProxyType:
    """Name -> path of each plain file in the static folder, fixed when the app is built.

    Requests are answered only for names in this table, so no path from a
    URL is ever joined to the file system.
    """
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA}
    return MappingProxyType(files)


def create_app(visualizer: Any) -> FastAPI:
    """A FastAPI app serving ``visualizer`` (an :class:`AttributionVisualizer`).

    Example:
        >>> import torch
        >>> from attribuo.insights import AttributionVisualizer, Batch
        >>> from attribuo.insights.features import GeneralFeature
        >>> vis = AttributionVisualizer(torch.nn.Linear(2, 2), ["a", "b"],
        ...     GeneralFeature("x", ["u", "v"]), [Batch(torch.rand(2, 2), torch.tensor([0, 1]))])
        >>> app = create_app(vis)   # run with uvicorn, or use InsightsServer
    """
    app = FastAPI(title="attribuo Insights", docs_url=None, redoc_url=None, openapi_url=None)
    files = _static_files()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        messages = {404: "not found", 405: "method not allowed"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "invalid request")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not a bad request: say what failed without a stack trace
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(files["index.html"], media_type="text/html")

    @app.get("/static/{name:path}")
    async def static(name: str) -> Any:
        path = files.get(name)
        if path is None:
            return _error(404, "not found")
        return FileResponse(path, media_type=_MEDIA[path.suffix])

    @app.get("/api/config")
    async def config() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(visualizer.get_insights_config))

    async def answer(request: Request, work: Any) -> JSONResponse:
        body = await request.body()
        if len(body) > _MAX_BODY:
            return _error(413, "request body too large")
        try:
            settings = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as error:
            return _error(400, f"malformed JSON: {error}")
        if not isinstance(settings, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            examples = await run_in_threadpool(work, settings)
        except (RequestError, ArgumentValueError) as error:
            return _error(400, str(error))
        except Exception as error:  # a bug, shown on the page rather than swallowed
            return _error(500, f"internal error: {type(error).__name__}: {error}")
        return JSONResponse({"examples": examples})

    @app.post("/api/fetch")
    async def fetch(request: Request) -> JSONResponse:
        return await answer(request, visualizer.visualize)

    @app.post("/api/attribute")
    async def attribute(request: Request) -> JSONResponse:
        return await answer(request, visualizer.attribute)

    return app


class InsightsServer:
    """uvicorn serving :func:`create_app` on 127.0.0.1 (every interface with ``bind_all``).

    The socket is bound when the object is made, so ``port`` is known (a free
    one when None is asked for) before serving starts.

    Example:
        >>> # server = InsightsServer(visualizer); server.start(); ...; server.stop()
    """

    def __init__(self, visualizer: Any, port: int | None = None, bind_all: bool = False,
                 debug: bool = False) -> None:
        import uvicorn

        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 <= port <= 65535):
            raise ArgumentValueError(f"`port` must be an integer from 0 to 65535, got {port!r}")
        host = "0.0.0.0" if bind_all else "127.0.0.1"
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port or 0))
        except OSError as error:
            self._socket.close()
            raise ArgumentValueError(f"`port` {port} cannot be used: {error}") from error
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        config = uvicorn.Config(create_app(visualizer), log_level="info" if debug else "warning",
                                access_log=debug, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self, timeout: float = 15.0) -> None:
        """Serve from a background thread; return once the server answers."""
        self._thread = threading.Thread(target=self.run, name="attribuo-insights", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Insights server did not start")
            time.sleep(0.02)

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C stops it."""
        try:
            while self.running:
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        """Ask the server to finish and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
