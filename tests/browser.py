"""Shared helpers for tests that talk to a real playground server: uvicorn on a free loopback port
in a thread, and headless Chromium driven by Selenium (the Debian chromium and chromium-driver
packages; nothing is downloaded at test time).

    with playground_server(runs_dir) as url:   # "http://127.0.0.1:PORT", the playground over runs_dir
        with chrome() as driver:             # skips the test when Chromium is not installed
            driver.get(url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000")


@contextlib.contextmanager
def live_server(make_app: Callable[[int], Any]) -> Iterator[str]:
    """Serve `make_app(port)` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    from charrnn.serve.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = make_app(port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if hasattr(app.state, "playground"):
            app.state.playground.close()
        server.should_exit = True
        thread.join(10)
        sock.close()



@contextlib.contextmanager
def chrome() -> Iterator[Any]:
    """A headless Chromium (fresh profile) driven by Selenium; the test is skipped without one."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs the chromium and chromium-driver packages (scripts/setup.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="charrnn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def playground_server(runs_dir: Path, **options: Any) -> Iterator[str]:
    """The playground over `runs_dir` on a live loopback server, guarding Host/Origin as `charrnn serve` does."""
    from charrnn.serve.app import create_app
    from charrnn.serve.server import allowed_hosts

    with live_server(lambda port: create_app(runs_dir, allowed_hosts=allowed_hosts("127.0.0.1", port),
                                             **options)) as url:
        yield url


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (warnings and info are not failures)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
