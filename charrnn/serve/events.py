"""The playground's wire format for generation: server-sent events, or one JSON record.

A stream's items (characters, with their candidates when asked for, then one end record) become
`start` / `chars` / `end` events; a client that goes away cancels the stream at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response

from .scheduler import Stream


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def chunk_items(batch: list[Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A batch of stream items -> the characters (and their steps) and the end record, if any."""
    text: list[str] = []
    steps: list[dict[str, Any]] = []
    end = None
    for item in batch:
        if isinstance(item, str):
            text.append(item)
        elif "c" in item:
            text.append(item["c"])
            steps.append({"p": item["p"], "top": item["top"]})
        elif "end" in item:
            end = item["end"]
    chars = None
    if text:
        chars = {"text": "".join(text)}
        if steps:
            chars["steps"] = steps
    return chars, end


class EventStream(Response):
    """Server-sent events from async chunks; a client that goes away cancels the stream at once."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], on_disconnect: Callable[[], None],
                 on_close: Callable[[], None]):
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                            (b"x-accel-buffering", b"no"), (b"x-content-type-options", b"nosniff")]  # open-ended: no length
        self.chunks, self.on_disconnect, self.on_close = chunks, on_disconnect, on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        listener = asyncio.ensure_future(listen())
        listener.add_done_callback(lambda _: self.on_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.chunks:
                if listener.done():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            pass
        finally:
            listener.cancel()
            self.on_close()
            await self.chunks.aclose()  # type: ignore[attr-defined]


async def stream_events(stream: Stream, settings: dict[str, Any]) -> AsyncIterator[bytes]:
    yield sse("start", {**settings, "stream": stream.id})
    async for batch in stream.items():
        chars, end = chunk_items(batch)
        if chars is not None:
            yield sse("chars", chars)
        if end is not None:
            yield sse("end", end)
            return


async def collect(stream: Stream) -> dict[str, Any]:
    text: list[str] = []
    steps: list[dict[str, Any]] = []
    end: dict[str, Any] = {}
    async for batch in stream.items():
        chars, done = chunk_items(batch)
        if chars is not None:
            text.append(chars["text"])
            steps.extend(chars.get("steps", []))
        if done is not None:
            end = done
    record: dict[str, Any] = {"text": "".join(text), "seed": stream.seed, "stopped": end.get("stopped", False),
                              "num_chars": end.get("num_chars", 0)}
    if stream.request.candidates:
        record["steps"] = steps
    return record
