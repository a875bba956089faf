"""The Insights web server: a FastAPI app built per visualizer, run by uvicorn.

Routes (all answers JSON except the page and its static files; see docs/insights.md):

    GET    /                          the page (static/index.html)
    GET    /static/<name>             one of the files in this package's static/ folder
    GET    /api/config                classes, models, features, methods with argument specs
    POST   /api/fetch                 next examples that pass the filters, attributed (waits)
    POST   /api/attribute             examples already fetched, attributed again (waits)
    POST   /api/jobs                  the same work as a job: {"kind", "request"} -> 202
    GET    /api/jobs/<id>             its state and progress (and examples once done)
    DELETE /api/jobs/<id>             cancel it (also POST /api/jobs/<id>/cancel)
    GET    /api/examples/<id>/export  ?model=K: the last attribution, as a JSON download

Every request passes :class:`_Guard` first (Host and Origin checks, body
limit, security headers). Attributions run in the :class:`JobRunner`'s
threads, never on the event loop. State lives in the visualizer and the
app built for it, never in this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Iterable
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from .._engine.errors import ArgumentValueError
from .jobs import Job, JobRunner, RunnerBusy
from .methods import RequestError

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 1 << 20  # bytes; requests are small JSON objects
MAX_DEPTH = 32  # JSON nesting; real requests nest 4 deep
_MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'")  # no frame-ancestors: notebooks
_HEADERS = [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]
_CHANGES_STATE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_WAIT_STEP = 0.1  # seconds between checks that a waiting route's client is still there


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _static_files() -> MappingProxyType:
    """Name -> path of each plain file in the static folder, fixed when the app is built.

    Requests are answered only for names in this table, so no path from a
    URL is ever joined to the file system.
    """
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA}
    return MappingProxyType(files)


# ----- request checks ----------------------------------------------------------------------

_PORT = re.compile(r":[0-9]{1,5}")


def host_name(value: str) -> tuple[str, bool] | None:
    """``(host, is_ip)`` of a ``Host`` header value, lower case without port; None if malformed.

    Example:
        >>> host_name("127.0.0.1:8000"), host_name("[::1]:80"), host_name("LocalHost")
        (('127.0.0.1', True), ('::1', True), ('localhost', False))
    """
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        is_ip = True
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
        try:
            ipaddress.IPv4Address(host)
            is_ip = True
        except ValueError:
            is_ip = False
            host = host.rstrip(".")
            if not host or not re.fullmatch(r"[a-z0-9._-]+", host):
                return None
    if rest and not _PORT.fullmatch(rest):
        return None
    return host, is_ip


def _same_origin(origin: str, host: str) -> bool:
    """Whether the ``Origin`` header names this app as reached through ``host``."""
    def strip(url: str) -> str:
        url = url.strip().lower().rstrip("/")
        return url[:-3] if url.endswith(":80") else url
    return strip(origin) == strip(f"http://{host}")


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings skipped).

    Example:
        >>> json_depth('{"a": [1, {"b": "[[["}]}')
        3
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a request body (empty -> ``{}``); :class:`RequestError` if unusable.

    Example:
        >>> parse_body(b'{"method": "Saliency"}')
        {'method': 'Saliency'}
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"request body is not valid UTF-8 (byte {error.start})") from None
    if not text.strip():
        return {}
    # json.loads recurses once per level: refuse deep nesting before it can overflow
    if json_depth(text) > MAX_DEPTH:
        raise RequestError(f"the JSON body nests deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise RequestError(f"malformed JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    return value


class _Guard:
    """Pure ASGI middleware: Host and Origin checks, the body limit, security headers.

    The body is read here, chunk by chunk, and refused with 413 as soon as it
    passes ``max_body``; the app then gets it as one message (later ``receive``
    calls go to the server, so disconnects are still seen).
    """

    def __init__(self, app: Any, names: frozenset[str], max_body: int = MAX_BODY) -> None:
        self.app = app
        self.names = names
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(_HEADERS)
        if scope["path"].startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            await _reply(send_with_headers, *refusal)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reply(send_with_headers, 413, "request body too large", close=True)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    def _refusal(self, method: str, headers: dict[str, list[str]]) -> tuple | None:
        """``(status, message, close)`` for a request refused before its body is read."""
        hosts = headers.get("host", [])
        if len(hosts) != 1:
            return 400, "the request needs exactly one Host header", False
        parsed = host_name(hosts[0])
        if parsed is None or not (parsed[1] or parsed[0] in self.names):
            return (400, f"host {hosts[0][:100]!r} is not allowed: use an IP address, localhost, "
                         "or a name given in `allowed_hosts`", False)
        if method in _CHANGES_STATE:
            origins = headers.get("origin", [])
            if any(not _same_origin(o, hosts[0]) for o in origins):
                return 403, f"cross-origin request from {origins[0][:100]!r} refused", False
            if any(v.strip().lower() == "cross-site" for v in headers.get("sec-fetch-site", [])):
                return 403, "cross-site request refused", False
        lengths = headers.get("content-length", [])
        if lengths and not all(v.strip().isascii() and v.strip().isdigit() for v in lengths):
            return 400, "invalid Content-Length", True
        if lengths and max(int(v) for v in lengths) > self.max_body:
            # the body was not read: close, so the server does not read it afterwards
            return 413, "request body too large", True
        return None


async def _reply(send: Any, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _host_names(allowed_hosts: Iterable[str], bind_all: bool) -> frozenset[str]:
    if isinstance(allowed_hosts, str):
        allowed_hosts = [allowed_hosts]
    names = {"localhost", *(str(h) for h in allowed_hosts)}
    if bind_all:  # others reach this machine by its name
        names |= {socket.gethostname(), socket.getfqdn()}
    return frozenset(n.strip().lower().rstrip(".") for n in names if n and n.strip())


# ----- the app -----------------------------------------------------------------------------


def create_app(visualizer: Any, allowed_hosts: Iterable[str] = (), bind_all: bool = False,
               debug: bool = False) -> FastAPI:
    """A FastAPI app serving ``visualizer`` (an :class:`AttributionVisualizer`).

    ``allowed_hosts``: host names, besides IP addresses and ``localhost``, that
    the ``Host`` header may carry (``bind_all`` adds this machine's names).
    The app's job runner is ``app.state.runner``; shut it down when done.

    Example:
        >>> import torch
        >>> from attribuo.insights import AttributionVisualizer, Batch
        >>> from attribuo.insights.features import GeneralFeature
        >>> vis = AttributionVisualizer(torch.nn.Linear(2, 2), ["a", "b"],
        ...     GeneralFeature("x", ["u", "v"]), [Batch(torch.rand(2, 2), torch.tensor([0, 1]))])
        >>> app = create_app(vis)   # run with uvicorn, or use InsightsServer
        >>> app.state.runner.shutdown()
    """
    app = FastAPI(title="attribuo Insights", docs_url=None, redoc_url=None, openapi_url=None)
    files = _static_files()

    def work(kind: str, request: dict, progress: Any) -> Any:
        run = visualizer.visualize if kind == "fetch" else visualizer.attribute
        return run(request, progress)

    runner = JobRunner(work, visualizer.estimate_cost, debug=debug)
    app.state.runner = runner
    app.add_middleware(_Guard, names=_host_names(allowed_hosts, bind_all))

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

    async def submit(kind: str, settings: dict) -> Job | JSONResponse:
        try:
            return await run_in_threadpool(runner.submit, kind, settings)
        except (RequestError, ArgumentValueError) as error:
            return _error(400, str(error))
        except RunnerBusy as error:
            return _error(503, str(error))

    async def wait(request: Request, kind: str) -> JSONResponse:
        try:
            settings = parse_body(await request.body())
        except RequestError as error:
            return _error(400, str(error))
        job = await submit(kind, settings)
        if isinstance(job, JSONResponse):
            return job
        try:
            await _wait_for(job, request, runner)
        finally:
            runner.forget(job)
        if job.state == "done":
            return JSONResponse({"examples": job.result})
        if job.state == "failed":
            return _error(job.status, job.error or "failed")
        return _error(409, "cancelled")

    @app.post("/api/fetch")
    async def fetch(request: Request) -> JSONResponse:
        return await wait(request, "fetch")

    @app.post("/api/attribute")
    async def attribute(request: Request) -> JSONResponse:
        return await wait(request, "attribute")

    @app.post("/api/jobs")
    async def new_job(request: Request) -> JSONResponse:
        try:
            body = parse_body(await request.body())
            unknown = sorted(set(body) - {"kind", "request"})
            if unknown:
                raise RequestError(f"unknown field {unknown[0]!r}; allowed: ['kind', 'request']")
            kind, settings = body.get("kind"), body.get("request", {})
            if kind not in ("fetch", "attribute"):
                raise RequestError(f"`kind` must be 'fetch' or 'attribute', got {kind!r}")
            if not isinstance(settings, dict):
                raise RequestError("`request` must be a JSON object")
        except RequestError as error:
            return _error(400, str(error))
        job = await submit(kind, settings)
        if isinstance(job, JSONResponse):
            return job
        return JSONResponse(job.snapshot(), status_code=202)

    def unknown_job(ident: str) -> JSONResponse:
        return _error(404, f"unknown job {ident[:40]!r} (finished jobs are kept "
                           f"{runner.keep_finished:g} s)")

    @app.get("/api/jobs/{ident}")
    async def job_state(ident: str) -> JSONResponse:
        job = runner.get(ident)
        return unknown_job(ident) if job is None else JSONResponse(job.snapshot())

    async def cancel(ident: str) -> JSONResponse:
        job = runner.cancel(ident)
        return unknown_job(ident) if job is None else JSONResponse(job.snapshot())

    app.delete("/api/jobs/{ident}")(cancel)
    app.post("/api/jobs/{ident}/cancel")(cancel)

    @app.get("/api/examples/{ident}/export")
    async def export(ident: str, model: str = "0") -> JSONResponse:
        if not (ident.isascii() and ident.isdigit() and len(ident) < 19):
            return _error(400, f"example id must be a whole number, got {ident[:40]!r}")
        if not (model.isascii() and model.isdigit() and len(model) < 10):
            return _error(400, f"`model` must be a model index, got {model[:40]!r}")
        try:
            record = await run_in_threadpool(visualizer.export, int(ident), int(model))
        except (RequestError, ArgumentValueError) as error:
            return _error(400, str(error))
        name = f"attribution-{int(ident)}-model{int(model)}.json"
        return JSONResponse(record, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


async def _wait_for(job: Job, request: Request, runner: JobRunner) -> None:
    """Wait until ``job`` is finished; cancel it if the client disconnects first."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(ended.set)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    job.add_done_callback(wake)
    while not ended.is_set():
        try:
            await asyncio.wait_for(ended.wait(), _WAIT_STEP)
        except TimeoutError:
            pass
        runner.touch(job)
        if not ended.is_set() and await request.is_disconnected():
            runner.cancel(job.id)
            return


class InsightsServer:
    """uvicorn serving :func:`create_app` on 127.0.0.1 (every interface with ``bind_all``).

    The socket is bound when the object is made, so ``port`` is known (a free
    one when None is asked for) before serving starts. ``allowed_hosts``: see
    :func:`create_app`. Stopping cancels every job.

    Example:
        >>> # server = InsightsServer(visualizer); server.start(); ...; server.stop()
    """

    def __init__(self, visualizer: Any, port: int | None = None, bind_all: bool = False,
                 debug: bool = False, allowed_hosts: Iterable[str] = ()) -> None:
        import uvicorn

        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 <= port <= 65535):
            raise ArgumentValueError(f"`port` must be an integer from 0 to 65535, got {port!r}")
        host = "0.0.0.0" if bind_all else "127.0.0.1"
        app = create_app(visualizer, allowed_hosts=allowed_hosts, bind_all=bind_all, debug=debug)
        self.runner: JobRunner = app.state.runner
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
        config = uvicorn.Config(app, log_level="info" if debug else "warning",
                                access_log=debug, lifespan="off", timeout_graceful_shutdown=5)
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
            self.runner.shutdown()
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
        """Cancel every job, ask the server to finish and wait for its thread (10 s at most)."""
        self.runner.shutdown(timeout=5)  # waiting routes then answer at once
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
