"""The playground on a real server: open streams, clients that go away, limits, signals, the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx2")

from browser import playground_server  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import one_error_line  # noqa: E402
from serve_runs import make_run  # noqa: E402

from charrnn.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "alpha")
    make_run(root, "wide", hidden=256)  # slow enough that a 20,000-character stream is still running when we look
    return root


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def first_event(response):
    """The first event's name and data, and the rest of the lines (keep them: dropping the iterator
    closes the response, which is a client going away)."""
    lines = response.iter_lines()
    event = next(lines)
    data = json.loads(next(lines).split(": ", 1)[1])
    return event, data, lines


def test_open_streams_are_capped_and_a_client_that_leaves_frees_its_slot(runs_dir):
    body = {"run": "wide", "length": 20_000, "seed": 1, "stream": True}
    with playground_server(runs_dir, max_streams=2) as url, httpx.Client(base_url=url, timeout=20) as client:
        status = lambda: client.get("/api/status").json()  # noqa: E731
        with client.stream("POST", "/api/generate", json=body) as one, \
                client.stream("POST", "/api/generate", json=body) as two:
            first, second = first_event(one), first_event(two)
            assert first[0] == second[0] == "event: start"
            assert wait_for(lambda: status()["models"][0]["streams"] == 2)
            third = client.post("/api/generate", json=body)
            assert third.status_code == 429 and "limit is 2" in third.json()["error"]
        # both clients went away mid-stream: their rows leave the batch and their slots come back
        assert wait_for(lambda: status()["streams"] == 0 and status()["models"][0]["streams"] == 0, 5)
        steps = status()["models"][0]["steps"]
        assert steps < 20_000  # they did not run to the end
        assert client.post("/api/generate", json={**body, "length": 5}).status_code == 200


def test_stop_ends_a_stream_on_the_server_at_once(runs_dir):
    body = {"run": "wide", "length": 20_000, "seed": 1, "stream": True}
    with playground_server(runs_dir) as url, httpx.Client(base_url=url, timeout=20) as client:
        with client.stream("POST", "/api/generate", json=body) as response:
            _, start, lines = first_event(response)
            assert client.post("/api/stop", json={"stream": start["stream"]}).json() == {"stopped": True}
            rest = "\n".join(lines)
        assert 'event: end\ndata: {"reason":"stopped"' in rest
        assert client.get("/api/status").json()["streams"] == 0


def test_the_page_and_its_assets_are_served_from_the_package(runs_dir):
    with playground_server(runs_dir) as url, httpx.Client(base_url=url, timeout=20) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        for asset in ("/static/app.js", "/static/app.css"):
            assert client.get(asset).status_code == 200
        assert "http://" not in page.text.replace(url, "") and "https://" not in page.text  # nothing from a CDN
        evil = client.get("/api/runs", headers={"host": "attacker.example"})
        assert evil.status_code == 403


def start_server(runs_dir, *args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(runs_dir), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, line
    return proc, line.split("http://", 1)[1].split("/", 1)[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_prints_its_address_and_stops_cleanly_on_a_signal(runs_dir, sig):
    proc, address = start_server(runs_dir)
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=20) as client:
            assert sorted(r["id"] for r in client.get("/api/runs").json()["runs"]) == ["alpha", "wide"]
            with client.stream("POST", "/api/generate", json={"run": "wide", "length": 20_000, "stream": True}) as r:
                lines = first_event(r)[2]  # a stream is open while the signal arrives
                proc.send_signal(sig)
                rest = "\n".join(lines)
            assert '"reason":"shutdown"' in rest
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert f"playground stopped ({sig.name})" in out and "Traceback" not in out


def test_the_command_refuses_what_it_cannot_serve(tmp_path):
    runner = CliRunner()
    one_error_line(runner.invoke(main, ["serve", str(tmp_path / "missing")]), "does not exist")
    one_error_line(runner.invoke(main, ["serve", str(tmp_path), "--host", "0.0.0.0"]), "--allow-remote")


def test_help_stays_instant_without_the_web_stack():
    code = "import sys, charrnn.cli; print(any(m.split('.')[0] in ('starlette', 'uvicorn', 'torch') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
