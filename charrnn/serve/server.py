"""Run the playground on uvicorn: bind, print the address, serve until SIGINT/SIGTERM, shut down cleanly."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from ..errors import CharRNNError
from .app import create_app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one the system picks)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CharRNNError(f"cannot bind to host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CharRNNError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host headers a loopback server answers: the names it is reached by from this machine."""
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    if ":" in host and not host.startswith("["):
        names.add(f"[{host}]")
    return {f"{name}:{port}" for name in names}


class _Server(uvicorn.Server):
    """uvicorn, with a shutdown that ends the streams first (an open stream would otherwise hold it
    until the graceful timeout) and without re-raising the signal it stopped on: Ctrl-C is how a
    server is meant to end, so the command exits 0."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]):
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self.stopped_by: str | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(sig: int, frame: Any) -> None:
            self.stopped_by = signal.Signals(sig).name
            self.handle_exit(sig, frame)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: Any = None) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.on_shutdown)
        await super().shutdown(sockets)


def run_server(runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
               device: str = "cpu", echo: Callable[[str], None] = print) -> str | None:
    """Serve the playground over `runs_dir` until SIGINT/SIGTERM; returns the signal's name (if one)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CharRNNError(f"runs folder {runs_dir} does not exist (train a model first, or give the folder "
                           "that holds your run folders)")
    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise CharRNNError(f"--host {host} would let other machines use this server; add --allow-remote if "
                           "that is what you want")
    sock = bind(host, port)
    port = sock.getsockname()[1]
    hosts = allowed_hosts(host, port) if loopback else None
    app = create_app(runs_dir, allowed_hosts=hosts, device=device)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                            timeout_keep_alive=5)
    server = _Server(config, on_shutdown=app.state.playground.close)
    shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else (f"[{host}]" if ":" in host else host)
    if not loopback:
        echo(f"warning: listening on {host}, reachable from other machines; anyone who can reach port {port} "
             "can use the models under " + str(runs_dir))
    echo(f"charrnn playground: http://{shown}:{port}/  (runs from {runs_dir}/; Ctrl-C stops)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return server.stopped_by
