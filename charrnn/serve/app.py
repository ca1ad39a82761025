"""The playground's web application: a Starlette app over the runs in one folder.

Routes (JSON in and out; errors are {"error": "<one line>"} with a 4xx status):
  GET  /                 the page (charrnn/serve/static/)
  GET  /api/runs         the runs that can be loaded (the library's run listing, `charrnn.runs`)
  GET  /api/status       streams and models in use, and the server's limits
  POST /api/generate     sample (or beam search); "stream": true answers with server-sent events
  POST /api/stop         end a stream now: {"stream": id}
  POST /api/next         the next-character distribution after a context, under decoding settings
  POST /api/score        how well the model predicts a text, per character too
  POST /api/neurons      one layer's hidden or cell state over a text (`charrnn.internals`), the units
                         that vary most, and the cell finder's best units per property of the text

Every request is checked before any work starts (`requests.py`: the library's `GenerationRequest`
and the server's own caps); model work runs on the model's
worker thread (`scheduler.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import CharRNNError
from . import requests as rq
from .events import EventStream, collect, sse, stream_events
from .runs import UnknownRunError, find_run, list_runs, record
from .scheduler import ModelWorker, Stream

STATIC = Path(__file__).parent / "static"
MAX_MODELS = 3  # models kept loaded (least recently used one unloaded first)
MAX_STREAMS = 64  # samples being generated at once, over all runs and clients
log = logging.getLogger("charrnn.serve")


class BusyError(CharRNNError):
    """Too much is running already (HTTP 429)."""


def _status_of(exc: Exception) -> int:
    if isinstance(exc, UnknownRunError):
        return 404
    if isinstance(exc, rq.LimitError):
        return 413
    if isinstance(exc, BusyError):
        return 429
    return 400


MAX_ERROR_CHARS = 300  # the library's messages quote the value refused; a huge one is cut short


def _error(message: str, status: int) -> JSONResponse:
    line = " ".join(str(message).split()) or "bad request"
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return JSONResponse({"error": line}, status_code=status, headers={"Cache-Control": "no-store"})


class Playground:
    """The server's state: the runs folder, the loaded models and the streams in flight."""

    def __init__(self, runs_dir: str | Path, *, device: str = "cpu", max_models: int = MAX_MODELS,
                 max_streams: int = MAX_STREAMS):
        self.runs_dir = Path(runs_dir)
        self.device = device
        self.max_models, self.max_streams = max_models, max_streams
        self.workers: OrderedDict[tuple[str, float], ModelWorker] = OrderedDict()
        self.streams: dict[str, Stream] = {}
        self.in_flight = 0
        self.lock = threading.Lock()
        self._load_lock = threading.Lock()

    # -- models -------------------------------------------------------------------------------

    def _worker_sync(self, run_id: str) -> ModelWorker:
        from ..checkpoint import load
        from ..runtime import resolve_device

        with self._load_lock:  # one load at a time; a second request for the same run finds it loaded
            run = find_run(self.runs_dir, run_id)
            key = (run.id, run.mtime)
            with self.lock:
                worker = self.workers.get(key)
                if worker is not None:
                    self.workers.move_to_end(key)
                    return worker
            stale = [k for k in self.workers if k[0] == run.id]  # retrained since it was loaded
            for k in stale:
                self._unload(k)
            while len(self.workers) >= self.max_models:
                idle = next((k for k, w in self.workers.items() if w.active == 0), None)
                if idle is None:
                    raise BusyError(f"{len(self.workers)} models are busy generating (the server keeps at most "
                                    f"{self.max_models} loaded); try again when a stream ends")
                self._unload(idle)
            ckpt = load(run.checkpoint, resolve_device(self.device))
            worker = ModelWorker(ckpt, run.id)
            with self.lock:
                self.workers[key] = worker
            return worker

    def _unload(self, key: tuple[str, float]) -> None:
        with self.lock:
            worker = self.workers.pop(key)
        worker.close(wait=0)

    async def worker(self, run_id: str) -> ModelWorker:
        return await run_in_threadpool(self._worker_sync, run_id)

    def close(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for worker in workers:
            worker.close()

    # -- slots --------------------------------------------------------------------------------

    def acquire(self, count: int) -> None:
        with self.lock:
            if self.in_flight + count > self.max_streams:
                raise BusyError(f"the server is generating {self.in_flight} samples, its limit is {self.max_streams}; "
                                "try again when one ends")
            self.in_flight += count

    def release(self, count: int) -> None:
        with self.lock:
            self.in_flight -= count

    def status(self) -> dict[str, Any]:
        with self.lock:
            models = [{"run": w.name, "streams": w.active, "max_batch": w.max_batch, "steps": w.steps}
                      for w in self.workers.values()]
            return {"streams": self.in_flight, "models": models,
                    "limits": {"streams": self.max_streams, "models": self.max_models, "prime": rq.MAX_PRIME,
                               "length": rq.MAX_LENGTH, "num_samples": rq.MAX_SAMPLES, "stops": rq.MAX_STOPS,
                               "stop_chars": rq.MAX_STOP_CHARS, "body_bytes": rq.MAX_BODY_BYTES,
                               "score_chars": rq.MAX_SCORE_CHARS, "neuron_chars": rq.MAX_NEURON_CHARS,
                               "candidates": rq.MAX_CANDIDATES, "beam": rq.MAX_BEAM}}


# ----------------------------------------------------------------------------------------------
# requests and responses


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object sent, read no further than the size cap."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > rq.MAX_BODY_BYTES:
            raise rq.LimitError(f"request body is over the limit of {rq.MAX_BODY_BYTES:,} bytes")
        chunks.append(chunk)
    return rq.read_json(b"".join(chunks))


async def _on_worker(worker: ModelWorker, fn: Callable[[], Any]) -> Any:
    return await asyncio.wrap_future(worker.submit(fn))


# ----------------------------------------------------------------------------------------------
# handlers


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def runs(request: Request) -> Response:
    pg: Playground = request.app.state.playground
    found = await run_in_threadpool(list_runs, pg.runs_dir)
    return JSONResponse({"runs": [record(r) for r in found]})


async def status(request: Request) -> Response:
    return JSONResponse(request.app.state.playground.status())


async def generate(request: Request) -> Response:
    pg: Playground = request.app.state.playground
    data = await _body(request)
    worker = await pg.worker(rq.run_id(data))
    req = rq.parse_generate(data, worker.vocab)
    settings = {"run": worker.name, **req.settings()}
    if req.beam is not None:
        return await _beam(worker, req, settings)
    pg.acquire(req.num_samples)
    loop = asyncio.get_running_loop()
    streams = [Stream(req, req.seed + i, loop) for i in range(req.num_samples)]
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            for s in streams:
                s.cancel()
                pg.streams.pop(s.id, None)
            pg.release(len(streams))

    try:
        for s in streams:
            pg.streams[s.id] = s
            worker.start(s)
    except BaseException:
        release()
        raise
    if req.stream:
        return EventStream(stream_events(streams[0], settings), on_disconnect=streams[0].cancel, on_close=release)
    try:
        samples = [await collect(s) for s in streams]
    finally:
        release()
    return JSONResponse({**settings, "text": samples[0]["text"], "samples": samples})


async def _beam(worker: ModelWorker, req: rq.GenerateRequest, settings: dict[str, Any]) -> Response:
    from ..beam import beam_search

    def search() -> list[Any]:
        return beam_search(worker.model, worker.vocab, req.length, width=req.beam, num_return=req.num_samples,
                           prime=req.prime, stop=req.stops, unknown=req.unknown, length_penalty=req.length_penalty)

    results = await _on_worker(worker, search)
    samples = [{"text": r.text, "logprob": r.logprob, "logprob_per_char": r.logprob_per_char, "stopped": r.stopped,
                "num_chars": r.num_chars} for r in results]
    if not req.stream:
        return JSONResponse({**settings, "text": samples[0]["text"], "samples": samples})

    async def events() -> AsyncIterator[bytes]:
        yield sse("start", settings)
        yield sse("chars", {"text": samples[0]["text"]})
        yield sse("end", {"reason": "beam", "stopped": samples[0]["stopped"], "num_chars": samples[0]["num_chars"],
                           "logprob": samples[0]["logprob"]})

    return EventStream(events(), on_disconnect=lambda: None, on_close=lambda: None)


async def stop(request: Request) -> Response:
    pg: Playground = request.app.state.playground
    data = await _body(request)
    stream_id = data.get("stream")
    if not isinstance(stream_id, str):
        raise CharRNNError("stream must be the id the start event gave")
    stream = pg.streams.get(stream_id)
    if stream is None:
        return JSONResponse({"stopped": False, "reason": "no such stream (it may have ended)"})
    stream.cancel()
    return JSONResponse({"stopped": True})


async def next_chars(request: Request) -> Response:
    from ..decoding import Decoding, sampling_distribution
    from ..generation import prime_ids, warm

    pg: Playground = request.app.state.playground
    data = await _body(request)
    worker = await pg.worker(rq.run_id(data))
    req = rq.parse_next(data, worker.vocab)

    def distribution() -> dict[str, Any]:
        logits = _context_logits(worker, req.context, req.unknown, prime_ids, warm)
        model_p = sampling_distribution(logits, Decoding(temperature=1.0))[0]
        shaped = sampling_distribution(logits, req.decoding)[0]
        order = sorted(range(len(model_p)), key=lambda i: -model_p[i])
        chars = worker.vocab.chars
        return {"strategy": req.decoding.strategy,
                "chars": [chars[i] for i in order], "model": [float(model_p[i]) for i in order],
                "sampling": [float(shaped[i]) for i in order]}

    return JSONResponse({"run": worker.name, **(await _on_worker(worker, distribution))})


def _context_logits(worker: ModelWorker, context: str, unknown: str, prime_ids: Any, warm: Any) -> Any:
    """The logits after `context` (on the worker thread); the last few contexts are remembered, so
    moving a slider does not re-read the text."""
    memo: OrderedDict = worker.__dict__.setdefault("context_memo", OrderedDict())
    key = (context, unknown)
    if key in memo:
        memo.move_to_end(key)
        return memo[key]
    logits_t, _ = warm(worker.model, prime_ids(worker.vocab, context, unknown))
    logits = logits_t.detach().float().cpu().numpy()[None, :]
    memo[key] = logits
    while len(memo) > 16:
        memo.popitem(last=False)
    return logits


async def score(request: Request) -> Response:
    from ..scoring import score_text

    pg: Playground = request.app.state.playground
    data = await _body(request)
    worker = await pg.worker(rq.run_id(data))
    req = rq.parse_score(data, worker.vocab)

    def run() -> dict[str, Any]:
        result = score_text(worker.model, worker.vocab, req.text, context=req.context, unknown=req.unknown,
                            per_char=True)
        assert result.surprisal is not None
        return {"num_chars": result.num_chars, "nats_per_char": result.nats_per_char,
                "bits_per_char": result.bits_per_char, "perplexity": result.perplexity,
                "first_position": result.first_position, "scored_text": result.scored_text,
                "surprisal": [round(float(x), 5) for x in result.surprisal]}

    return JSONResponse({"run": worker.name, **(await _on_worker(worker, run))})


async def neurons(request: Request) -> Response:
    from . import neurons as nr

    pg: Playground = request.app.state.playground
    data = await _body(request)
    worker = await pg.worker(rq.run_id(data))
    config = worker.model.config
    req = rq.parse_neurons(data, worker.vocab, config.num_layers, config.hidden_size, nr.kinds(worker.model))

    def run() -> dict[str, Any]:
        kept = "".join(c for c in req.text if c in worker.vocab) if req.unknown == "skip" else req.text
        values = nr.states(worker.model, worker.vocab.encode(kept), req.layer, req.kind)
        ranked = nr.ranked_cells(values)
        cell = req.cell if req.cell is not None else (ranked[0] if ranked else 0)
        return {"layer": req.layer, "kind": req.kind, "kinds": list(nr.kinds(worker.model)), "cell": cell,
                "num_layers": config.num_layers, "hidden_size": config.hidden_size, "text": kept,
                "values": [round(float(v), 4) for v in values[:, cell]],
                "top_cells": [{"cell": c, "spread": round(float(values[:, c].std()), 4)} for c in ranked],
                **({"finder": nr.finder(worker.model, worker.vocab, kept)} if req.finder else {})}

    return JSONResponse({"run": worker.name, **(await _on_worker(worker, run))})


# ----------------------------------------------------------------------------------------------
# guards and the app


class _Guard:
    """Refuse requests from elsewhere before any route sees them.

    A web page on another site can make the browser send requests to 127.0.0.1, and with DNS
    rebinding even read the answers: so the Host header must name this server (as the page was
    loaded from it), and an Origin, when the browser sends one, must be this server's own.
    """

    def __init__(self, app: Any, allowed_hosts: set[str] | None):
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        problem, status = None, 403
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            problem = (f"Host {host[:100]!r} is not this server's (it answers to "
                       f"{', '.join(sorted(self.allowed_hosts))})")
        origin = headers.get(b"origin")
        if problem is None and origin is not None:
            value = origin.decode("latin-1").strip().lower()
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or parts.netloc != host:
                problem = f"requests from origin {value[:100]!r} are refused: only this server's own page may call it"
        length = headers.get(b"content-length")
        if problem is None and length is not None:
            try:
                too_big = int(length) > rq.MAX_BODY_BYTES
            except ValueError:
                too_big, problem, status = False, "Content-Length is not a number", 400
            if too_big:
                problem, status = f"request body is over the limit of {rq.MAX_BODY_BYTES:,} bytes", 413
        if problem is not None:
            await _error(problem, status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if exc.status_code == 404:
            detail = f"no such page: {request.url.path[:100]}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path[:100]}"
        return _error(detail, exc.status_code)
    if isinstance(exc, CharRNNError):
        return _error(str(exc), _status_of(exc))
    log.exception("internal error on %s", request.url.path)
    return _error(f"internal error ({type(exc).__name__}); the server keeps running", 500)


def create_app(runs_dir: str | Path, *, allowed_hosts: set[str] | None = None, device: str = "cpu",
               max_models: int = MAX_MODELS, max_streams: int = MAX_STREAMS) -> Starlette:
    """The playground over the runs in `runs_dir`. `allowed_hosts`: the Host headers it answers
    (e.g. {"127.0.0.1:8000", "localhost:8000"}); None answers any host (remote use)."""
    playground = Playground(runs_dir, device=device, max_models=max_models, max_streams=max_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(playground.close)

    routes = [
        Route("/", page),
        Route("/api/runs", runs),
        Route("/api/status", status),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/next", next_chars, methods=["POST"]),
        Route("/api/score", score, methods=["POST"]),
        Route("/api/neurons", neurons, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _on_error, CharRNNError: _on_error, Exception: _on_error})
    app.state.playground = playground
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    return app
