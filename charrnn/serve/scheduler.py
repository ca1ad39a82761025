"""One thread per loaded model: continuous batching of every stream on that model, and its other work.

All model work for a run happens on its worker thread, so nothing in the library is ever called
from two threads at once (its process-wide switches stay safe), and concurrent streams are
stepped together: each step the worker chooses a character for every live stream, then advances
all of them with ONE engine step (`charrnn.engine`). A stream joins the batch between steps (its
prime is warmed and its state appended as a new row) and leaves it between steps (ended, stopped
or disconnected: its row is dropped with `engine.select`).

Each stream keeps its own decoding settings and seeded draws, and every character is decided by
the library's one decoding chain, `decoding.Chooser.choose`: the model step is batched over all
streams, and the rows with equal settings are decided together by one `Chooser` for those
settings (the chain works row by row, so a row's choice does not depend on the rows beside it),
with the Philox uniforms `decoding.Draws` keys by the stream's seed (stream 0: the draws, 1: the
ε-greedy coin) and position, as `generation.Generation` does. So a stream's text is the text
`sample.stream` (or `inspect_steps`, when candidates are asked for) gives for the same request
alone, whoever else shares the batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..decoding import Chooser, Decoding, Draws
from ..errors import CharRNNError
from ..generation import prime_ids, warm
from .requests import GenerateRequest

_STOP = object()
# A consumer is woken at most this often (20 times a second: smooth to watch) while its stream
# runs; its first characters and its end wake it at once. Each wake costs the event loop a turn
# and the worker the GIL (benchmarks/serve_load.py, against generate_batch: waking every step
# left 1 client at 0.53x, every 20 ms left 32 clients at 0.60x; every 50 ms gives about 0.8x).
WAKE_INTERVAL = 0.05
log = logging.getLogger("charrnn.serve")
_ids = itertools.count(1)


class Stream:
    """One sample being generated: filled by the worker thread, read by one asyncio consumer.

    The worker appends items to `pending` (a deque: safe across threads) and wakes the consumer's
    event loop at most once per step; the consumer drains whatever has piled up, so a slow reader
    gets bigger chunks instead of holding the batch back.
    """

    def __init__(self, request: GenerateRequest, seed: int, loop: asyncio.AbstractEventLoop | None):
        self.id = f"s{next(_ids)}-{os.urandom(4).hex()}"
        self.request, self.seed, self.loop = request, seed, loop
        self.pending: collections.deque = collections.deque()
        self.event = asyncio.Event() if loop is not None else None
        self.done = threading.Event()  # set when the worker has let go of the stream
        self.wake_queued = False
        self.last_wake = 0.0  # when the worker last woke the consumer (time.monotonic)
        self.cancelled = False
        # the worker's per-row state
        self.step = 0
        self.tail = ""
        self.text: list[str] | None = [] if not request.stream else None

    def cancel(self) -> None:
        """Stop at the next step boundary (the worker drops the row there)."""
        self.cancelled = True

    async def items(self) -> AsyncIterator[list[Any]]:
        """Batches of items: str characters, dicts for per-step candidates, and a final {"end": ...}."""
        assert self.event is not None
        while True:
            await self.event.wait()
            self.event.clear()
            batch = []
            pending = self.pending
            while pending:
                batch.append(pending.popleft())
            if batch:
                yield batch
                if isinstance(batch[-1], dict) and "end" in batch[-1]:
                    return


class _Row:
    """What the worker keeps per stream beyond the Stream itself (draws, penalty window)."""

    __slots__ = ("stream", "key", "draws", "exploit", "recent", "history", "top", "stops", "tail_len", "stop_ends")

    def __init__(self, stream: Stream, vocab_size: int):
        request = stream.request
        decoding = request.decoding
        self.stream = stream
        self.key = decoding  # rows with equal settings are decided together
        # The draws Generation makes for sample `seed` alone (stream 0), and its ε-greedy coin (stream 1).
        seeds = np.array([stream.seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
        sampled = not decoding.is_greedy
        self.draws = Draws(seeds, 0) if sampled else None
        self.exploit = Draws(seeds, 1) if sampled and decoding.epsilon > 0 else None
        penalise = decoding.penalised
        self.recent = np.zeros(vocab_size, dtype=np.int32) if penalise else None
        self.history = np.zeros(decoding.repetition_window, dtype=np.intp) if penalise else None
        self.top = min(request.candidates, vocab_size)
        self.stops = request.stops
        self.tail_len = max((len(s) for s in self.stops), default=0)
        self.stop_ends = {s[-1] for s in self.stops}

    def deliver(self, char_id: int, chars: list[str], probs: np.ndarray | None) -> str | None:
        """Hand the chosen character to the stream; why the stream ends with it, if it does."""
        stream = self.stream
        c = chars[char_id]
        if self.top:
            assert probs is not None
            order = np.argsort(-probs, kind="stable")[: self.top]
            stream.pending.append({"c": c, "p": float(probs[char_id]),
                                   "top": [[chars[k], float(probs[k])] for k in order.tolist()]})
        else:
            stream.pending.append(c)
        if stream.text is not None:
            stream.text.append(c)
        step = stream.step
        stream.step = step + 1
        self.remember(step, char_id)
        if self.tail_len:
            stream.tail = tail = (stream.tail + c)[-self.tail_len:]
            if c in self.stop_ends and any(tail.endswith(s) for s in self.stops):
                return "stop string"
        return "length" if stream.step >= stream.request.length else None

    def remember(self, step: int, char_id: int) -> None:
        """Count the character in the repetition penalty's window (the last `repetition_window`)."""
        if self.recent is None:
            return
        window = len(self.history)
        slot = step % window
        if step >= window:
            self.recent[self.history[slot]] -= 1
        self.recent[char_id] += 1
        self.history[slot] = char_id


class Decider:
    """Decides one character for every row, rows with equal settings together through one `Chooser`.

    Keeps one decoding chain per distinct settings in use (its buffers are reused step after step);
    for greedy rows that show candidates, the chain that gives the model's own distribution.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.choosers: dict[Decoding, Chooser] = {}

    def chooser(self, decoding: Decoding, rows: list[_Row]) -> Chooser:
        chooser = self.choosers.get(decoding)
        if chooser is None:
            if len(self.choosers) >= 64:  # settings no stream uses any more: their buffers go
                self.choosers = {row.key: self.choosers[row.key] for row in rows if row.key in self.choosers}
            chooser = self.choosers[decoding] = Chooser(decoding, self.vocab_size)
        return chooser

    def decide(self, rows: list[_Row], logits: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The chosen ids, and for rows that show candidates the distribution each was drawn from."""
        n = len(rows)
        ids = np.empty(n, dtype=np.intp)
        probs_of: dict[int, np.ndarray] = {}
        groups: dict[Decoding, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.key, []).append(i)
        for decoding, members in groups.items():
            group = [rows[i] for i in members]
            glogits = logits if len(members) == n else logits[members]
            chooser = self.chooser(decoding, rows)
            u = np.array([r.draws.at(r.stream.step)[0] for r in group]) if not chooser.greedy else np.zeros(len(group))
            u_eps = np.array([r.exploit.at(r.stream.step)[0] for r in group]) if chooser.epsilon else None
            recent = np.stack([r.recent for r in group]) if decoding.penalised else None
            ids[members] = chooser.choose(glogits, u, u_eps, recent)
            shown = [j for j, r in enumerate(group) if r.top]
            if shown:  # what inspect_steps shows: the distribution drawn from (greedy: the model's own)
                if chooser.greedy:
                    model_own = self.chooser(Decoding(repetition_penalty=decoding.repetition_penalty,
                                                      repetition_window=decoding.repetition_window), rows)
                    probs = model_own.distribution(glogits[shown], None if recent is None else recent[shown])
                else:
                    weights = chooser.weights[shown]
                    probs = weights / weights.sum(axis=1, keepdims=True, dtype=np.float64)
                for k, j in enumerate(shown):
                    probs_of[members[j]] = probs[k]
        return ids, probs_of


class ModelWorker:
    """A loaded model and the one thread that runs everything on it."""

    def __init__(self, checkpoint: Checkpoint, name: str):
        self.checkpoint = checkpoint
        self.model, self.vocab = checkpoint.model, checkpoint.vocab
        self.model.eval()
        self.name = name
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.rows: list[_Row] = []
        self.engine: Any = None
        self.logits: np.ndarray | None = None  # (rows, V) float32: what each row decides from next
        self.decider = Decider(len(self.vocab))
        self.max_batch = 0  # the most streams stepped together so far (for tests and the status page)
        self.steps = 0
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=f"charrnn-model-{name}", daemon=True)
        self._thread.start()

    # -- called from other threads ------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self.rows)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `fn()` on the worker thread between two steps; its result (or error) in the future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.closed:
            future.set_exception(CharRNNError("the server is shutting down"))
            return future
        self.tasks.put((fn, future))
        return future

    def start(self, stream: Stream) -> None:
        """Add a stream to the batch at the next step boundary."""
        if self.closed:
            raise CharRNNError("the server is shutting down")
        self.tasks.put(stream)

    def close(self, wait: float = 5.0) -> None:
        """End every stream (each gets its end item) and the thread."""
        if not self.closed:
            self.closed = True
            self.tasks.put(_STOP)
        self._thread.join(wait)

    # -- the worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            try:
                item = self.tasks.get(block=not self.rows)
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    for row in self.rows:
                        self._finish(row, "shutdown")
                    self._wake([row.stream for row in self.rows])
                    self.rows = []
                    self._drain_refusing()
                    return
                if isinstance(item, Stream):
                    try:
                        self._admit(item)
                    except Exception as exc:  # checked requests should not fail; if one does, it alone ends
                        log.exception("could not start a stream on %s", self.name)
                        item.pending.append({"end": {"reason": "error", "error": _line(exc), "stopped": False,
                                                     "num_chars": 0}})
                        item.done.set()
                        self._wake([item])
                else:
                    fn, future = item
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as exc:  # handed to the caller, who answers with it
                            future.set_exception(exc)
                try:
                    item = self.tasks.get_nowait()
                except queue.Empty:
                    item = None
            if self.rows:
                try:
                    self._step()
                except Exception as exc:  # never leave streams waiting on a dead batch
                    log.exception("generation failed on %s", self.name)
                    for row in self.rows:
                        row.stream.pending.append({"end": {"reason": "error", "error": _line(exc), "stopped": False,
                                                           "num_chars": row.stream.step}})
                        row.stream.done.set()
                    self._wake([row.stream for row in self.rows])
                    self.rows, self.engine, self.logits = [], None, None

    def _drain_refusing(self) -> None:
        while True:
            try:
                item = self.tasks.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Stream):
                item.pending.append({"end": {"reason": "shutdown", "stopped": False}})
                self._wake([item])
            elif isinstance(item, tuple):
                item[1].set_exception(CharRNNError("the server is shutting down"))

    def _admit(self, stream: Stream) -> None:
        """Warm the stream's prime and append it to the batch as a new engine row."""
        from ..engine import NumpyEngine, make_engine

        request = stream.request
        if stream.cancelled:
            self._finish(_Row(stream, len(self.vocab)), "stopped")
            self._wake([stream])
            return
        on_numpy = isinstance(self.engine, NumpyEngine) if self.engine is not None and self.rows else \
            NumpyEngine.computes(self.model)  # what make_engine(model, 1) below picks
        logits_t, hidden = warm(self.model, prime_ids(self.vocab, request.prime, request.unknown), on_numpy=on_numpy)
        first = logits_t.detach().to("cpu", torch.float32).numpy()[None, :]
        if self.engine is None or not self.rows:
            self.engine = make_engine(self.model, 1)
            self.engine.set_hidden(hidden)
            self.logits = first.copy()
        else:
            n = len(self.rows)
            old = self.engine.get_hidden()
            self.engine.select(np.arange(n + 1) % n)  # one more row, its state set just below
            if isinstance(old, tuple):
                self.engine.set_hidden(tuple(torch.cat([o, h.to(o.device)], dim=1) for o, h in zip(old, hidden,
                                                                                                 strict=True)))
            else:
                self.engine.set_hidden(torch.cat([old, hidden.to(old.device)], dim=1))
            self.logits = np.concatenate([self.logits, first])
        self.rows.append(_Row(stream, len(self.vocab)))
        self.max_batch = max(self.max_batch, len(self.rows))
        stream.pending.append({"start": True})
        self._wake([stream])

    def _finish(self, row: _Row, reason: str) -> None:
        stream = row.stream
        end: dict[str, Any] = {"reason": reason, "stopped": reason == "stop string", "num_chars": stream.step}
        stream.pending.append({"end": end})
        stream.done.set()

    def _wake(self, streams: list[Stream]) -> None:
        """Wake the consumers of these streams: one call into each event loop, however many streams."""
        by_loop: dict[Any, list[Stream]] = {}
        for stream in streams:
            if stream.loop is not None and not stream.wake_queued:
                stream.wake_queued = True
                by_loop.setdefault(stream.loop, []).append(stream)
        for loop, waiting in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_events, waiting)
            except RuntimeError:  # that loop has closed: its consumers are gone
                pass

    def _step(self) -> None:
        """Decide one character for every row, deliver them, drop finished rows, advance the rest."""
        rows = self.rows
        logits = self.logits
        assert logits is not None
        n = len(rows)
        ids, probs_of = self.decider.decide(rows, logits)
        chars = self.vocab.chars
        keep: list[int] = []
        woken: list[Stream] = []
        now = time.monotonic()
        for i, row in enumerate(rows):
            stream = row.stream
            if stream.cancelled:  # stopped or disconnected: the row leaves now, nothing more is sent
                self._finish(row, "stopped")
                woken.append(stream)
                continue
            ended = row.deliver(int(ids[i]), chars, probs_of.get(i))
            if ended is not None:
                self._finish(row, ended)
                woken.append(stream)
                continue
            if now - stream.last_wake >= WAKE_INTERVAL:
                stream.last_wake = now
                woken.append(stream)
            keep.append(i)
        self.steps += 1
        self._wake(woken)
        if len(keep) < n:
            self.rows = [rows[i] for i in keep]
            if not keep:
                self.logits = None
                return
            self.engine.select(np.array(keep, dtype=np.intp))
            ids = ids[keep]
        out = self.engine.step(ids)
        self.logits = out


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _set_events(streams: list[Stream]) -> None:
    for stream in streams:
        stream.wake_queued = False
        assert stream.event is not None
        stream.event.set()
