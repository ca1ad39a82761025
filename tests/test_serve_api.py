"""The playground's HTTP API through Starlette's test client: answers, errors, limits and guards."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from serve_runs import load_model, make_run  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from charrnn.sample import Decoding, generate_batch, inspect_steps, stream  # noqa: E402
from charrnn.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "alpha", seed=1)
    make_run(root, "beta", seed=2, kind="gru", layers=1, val_loss=2.0)
    outside = tmp_path_factory.mktemp("elsewhere")
    make_run(outside, "secret", seed=3)
    os.symlink(outside / "secret", root / "linked")  # a link out of the runs folder
    (root / "empty").mkdir()  # no checkpoint: not a run
    return root


@pytest.fixture(scope="module")
def client(runs_dir):
    with TestClient(create_app(runs_dir, allowed_hosts={"testserver"})) as c:
        yield c


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def assert_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message and len(message) <= 300
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_runs_lists_each_run_folder_with_its_description(client):
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == {"alpha", "beta"}  # not the link out of the folder, not the folder without checkpoint
    assert runs["alpha"]["corpus"] == "play.txt" and runs["alpha"]["size"] == "2x24 LSTM"
    assert runs["beta"]["size"] == "1x24 GRU" and runs["beta"]["val_loss"] == 2.0
    assert runs["alpha"]["updated"].startswith("2026-")
    assert "path" not in json.dumps(runs)  # no file-system path leaves the server


def test_generate_gives_the_librarys_text_for_the_same_request(client, runs_dir):
    model, vocab = load_model(runs_dir / "alpha")
    body = {"run": "alpha", "prime": "to be", "length": 120, "seed": 11, "temperature": 0.9, "top_k": 6}
    got = client.post("/api/generate", json=body).json()
    want = generate_batch(model, vocab, 120, prime="to be", decoding=Decoding(temperature=0.9, top_k=6), seed=11)
    assert got["text"] == want[0].text and got["seed"] == 11 and got["strategy"] == "T=0.9 top-k=6"
    # streamed: the same characters, in order, as sample.stream gives them
    with client.stream("POST", "/api/generate", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[0][0] == "start" and events[0][1]["seed"] == 11 and events[0][1]["stream"]
    assert "".join(e["text"] for kind, e in events if kind == "chars") == \
        "".join(stream(model, vocab, 120, prime="to be", decoding=Decoding(temperature=0.9, top_k=6), seed=11))
    assert events[-1] == ("end", {"reason": "length", "stopped": False, "num_chars": 120})
    # several samples: sample i is seed + i
    many = client.post("/api/generate", json={**body, "num_samples": 3}).json()["samples"]
    batch = generate_batch(model, vocab, 120, num_samples=3, prime="to be",
                           decoding=Decoding(temperature=0.9, top_k=6), seed=11)
    assert [s["text"] for s in many] == [s.text for s in batch] and [s["seed"] for s in many] == [11, 12, 13]


def test_candidates_are_the_per_step_table_of_inspect(client, runs_dir):
    model, vocab = load_model(runs_dir / "alpha")
    got = client.post("/api/generate", json={"run": "alpha", "prime": "to", "length": 30, "seed": 4,
                                             "temperature": 1.2, "candidates": 4}).json()
    views = list(inspect_steps(model, vocab, 30, top=4, prime="to", decoding=Decoding(temperature=1.2), seed=4))
    steps = got["samples"][0]["steps"]
    assert got["text"] == "".join(v.chosen for v in views)
    for step, view in zip(steps, views, strict=True):
        assert step["p"] == pytest.approx(view.chosen_prob)
        assert [c for c, _ in step["top"]] == [c for c, _ in view.candidates]


def test_stop_strings_end_the_text(client):
    got = client.post("/api/generate", json={"run": "alpha", "length": 2000, "seed": 1, "temperature": 1.0,
                                             "stop": ["\\n", "q"]}).json()
    assert got["samples"][0]["stopped"] and got["text"][-1] in "\nq" and len(got["text"]) < 2000


def test_beam_search_and_greedy(client, runs_dir):
    from charrnn.sample import beam_search

    model, vocab = load_model(runs_dir / "alpha")
    got = client.post("/api/generate", json={"run": "alpha", "prime": "to", "length": 20, "beam": 3}).json()
    assert got["text"] == beam_search(model, vocab, 20, width=3, prime="to")[0].text
    greedy = client.post("/api/generate", json={"run": "alpha", "prime": "to", "length": 20, "greedy": True}).json()
    assert greedy["strategy"] == "greedy"


def test_next_distribution_reshapes_with_the_settings(client):
    def dist(**settings):
        return client.post("/api/next", json={"run": "alpha", "context": "to be", **settings}).json()

    plain, cold, topk, nucleus = dist(temperature=1.0), dist(temperature=0.3), dist(top_k=3), dist(top_p=0.5)
    assert plain["model"] == plain["sampling"] and sum(plain["model"]) == pytest.approx(1.0)
    assert plain["model"] == sorted(plain["model"], reverse=True)
    assert cold["sampling"][0] > plain["sampling"][0]  # a low temperature sharpens
    assert sum(p > 0 for p in topk["sampling"]) == 3
    assert 1 <= sum(p > 0 for p in nucleus["sampling"]) < len(plain["chars"])
    assert topk["model"] == plain["model"]  # the model's own distribution is shown beside it


def test_score_and_neurons(client, runs_dir):
    from charrnn.scoring import score_text

    model, vocab = load_model(runs_dir / "alpha")
    got = client.post("/api/score", json={"run": "alpha", "text": "to be or not to be"}).json()
    want = score_text(model, vocab, "to be or not to be")
    assert got["nats_per_char"] == pytest.approx(want.nats_per_char) and len(got["surprisal"]) == 17
    cells = client.post("/api/neurons", json={"run": "alpha", "text": "to be or not", "layer": 1,
                                              "finder": True}).json()
    assert cells["hidden_size"] == 24 and len(cells["values"]) == len("to be or not")
    assert cells["cell"] == cells["top_cells"][0]["cell"]
    # the top layer's activations are the model's own hidden output
    import torch

    with torch.inference_mode():
        out, _ = model.rnn(model.embed(torch.tensor([vocab.encode("to be or not")])))
    assert cells["values"] == pytest.approx(out[0, :, cells["cell"]].tolist(), abs=1e-3)
    one = client.post("/api/neurons", json={"run": "alpha", "text": "to be", "layer": 0, "cell": 5}).json()
    assert one["cell"] == 5 and one["layer"] == 0 and one["kind"] == "hidden" and one["kinds"] == ["hidden", "cell"]
    assert "finder" not in one  # only when asked: it runs the model over the text a second time
    # an LSTM's cell state too, tanh-scaled as charrnn explain shows it: the model's own c, step by step
    c = client.post("/api/neurons", json={"run": "alpha", "text": "to be or", "layer": 0, "kind": "cell",
                                          "cell": 7}).json()
    hidden, want = None, []
    with torch.inference_mode():
        for i in vocab.encode("to be or"):
            _, hidden = model.rnn(model.embed(torch.tensor([[i]])), hidden)
            want.append(float(torch.tanh(hidden[1][0, 0, 7])))
    assert c["kind"] == "cell" and c["values"] == pytest.approx(want, abs=1e-3)
    # and the cell finder's best units for properties of the text
    finder = {p["property"]: p for p in cells["finder"]}
    assert "word start" in finder and finder["word start"]["statistic"] == "ROC AUC"
    best = finder["word start"]["cells"][0]
    assert 0 <= best["layer"] < 2 and best["kind"] in ("hidden", "cell") and 0 <= best["cell"] < 24


# ----------------------------------------------------------------------------------------------
# only runs under RUNS_DIR


@pytest.mark.parametrize("run", ["../elsewhere/secret", "linked", "empty", "/etc/passwd", "alpha/../alpha",
                                 "%2e%2e%2falpha", "..", ".", "alpha/", "ALPHA", "alpha\x00", 7, None, ["alpha"]])
def test_no_path_from_a_request_reaches_the_file_system(client, run):
    response = client.post("/api/generate", json={"run": run, "length": 5})
    status = 404 if isinstance(run, str) and run else 400
    assert_error(response, status, "run")


def test_a_path_in_the_url_is_no_way_in_either(client):
    for path in ("/static/../../checkpoint.py", "/static/%2e%2e/app.py", "/api/runs/../../x", "/static//etc/passwd"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "import" not in response.text


# ----------------------------------------------------------------------------------------------
# bad input: a 4xx with one line, and the server keeps serving


BAD_BODIES = [
    (b"{bad", 400, "malformed JSON"),
    (b"", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b'{"run": "alpha", "temperature": NaN}', 400, "NaN"),
    (b'{"run": "alpha", "temperature": Infinity}', 400, "Infinity"),
    (b'{"run": "alpha", "temperature": 1e999}', 400, "finite"),
    (b'{"run": "alpha", "length": 1' + b"0" * 5000 + b"}", 400, "malformed JSON"),
    (b'{"run": "alpha", "length": 100000000000000000000}', 413, "limit"),
    (b'{"run": "alpha", "length": "100"}', 400, "length must be a non-negative integer, got '100'"),
    (b'{"run": "alpha", "length": true}', 400, "integer, got True"),
    (b'{"run": "alpha", "length": "' + b"9" * 9000 + b'"}', 400, "length must be a non-negative integer, got '999"),
    (b'{"run": "alpha", "length": 2.5}', 400, "integer"),
    (b'{"run": "alpha", "length": 0}', 400, "at least 1"),
    (b'{"run": "alpha", "temperature": "hot"}', 400, "temperature must be > 0"),
    (b'{"run": "alpha", "temperature": -1}', 400, "temperature must be > 0"),
    (b'{"run": "alpha", "top_k": 0}', 400, "top-k must be an integer >= 1"),
    (b'{"run": "alpha", "top_p": 1.5}', 400, "top-p must be in (0, 1]"),
    (b'{"run": "alpha", "epsilon": 2}', 400, "epsilon must be in [0, 1]"),
    (b'{"run": "alpha", "repetition_penalty": 0.5}', 400, "repetition penalty must be >= 1"),
    (b'{"run": "alpha", "greedy": true, "top_k": 5}', 400, "greedy always takes the most likely character"),
    (b'{"run": "alpha", "beam": 3, "temperature": 0.5}', 400, "drop --temperature"),
    (b'{"run": "alpha", "seed": -1}', 400, "seed must be an integer in 0.."),
    # the hint is in the API's words: a playground user has no --unknown to pass
    (b'{"run": "alpha", "prime": "xyz\xc3\xa9"}', 400, '\'\u00e9\'; send "unknown": "skip"'),
    (b'{"run": "alpha", "prime": 5}', 400, "prime must be a string"),
    (b'{"run": "alpha", "stop": ["Z"]}', 400, "can never occur"),
    (b'{"run": "alpha", "stop": "\\\\q"}', 400, "unknown escape"),
    (b'{"run": "alpha", "stop": [1]}', 400, "stop strings must be a list of strings"),
    (b'{"run": "alpha", "num_samples": 1000}', 413, "limit of 16"),
    (b'{"run": "alpha", "num_samples": 2, "stream": true}', 400, "one sample"),
    (b'{"run": "alpha", "candidates": 500}', 413, "limit"),
    (b'{"run": "alpha", "temprature": 0.5}', 400, "unknown field(s): 'temprature'"),
    # the library request's file-reading and output options are not the playground's to set
    (b'{"run": "alpha", "prime_file": "/etc/passwd"}', 400, "unknown field(s): 'prime_file'"),
    (b'{"run": "alpha", "length": 5.0, "top_k": 3.0}', 200, None),
    (b'{"run": "nope"}', 404, "no run 'nope'"),
    (b'{"length": 5}', 400, "run is missing"),
]


@pytest.mark.parametrize("raw,status,fragment", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_input_gets_a_4xx_with_one_line_and_the_server_keeps_serving(client, raw, status, fragment):
    response = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    if status == 200:  # JSON writers may send integers as 5.0
        assert response.status_code == 200 and len(response.json()["text"]) == 5, response.text
        return
    assert_error(response, status, fragment)
    assert client.post("/api/generate", json={"run": "alpha", "length": 3, "seed": 1}).status_code == 200


def test_oversize_bodies_and_texts_are_refused(client):
    big = json.dumps({"run": "alpha", "prime": "t" * 300_000}).encode()
    assert_error(client.post("/api/generate", content=big), 413, "over the limit")

    def chunked():  # no Content-Length: the cap is counted while reading
        yield b'{"run": "alpha", "prime": "'
        for _ in range(40):
            yield b"t" * 10_000
        yield b'"}'

    assert_error(client.post("/api/generate", content=chunked()), 413, "over the limit")
    assert_error(client.post("/api/generate", json={"run": "alpha", "prime": "t" * 20_000}), 413, "prime")
    assert_error(client.post("/api/generate", json={"run": "alpha", "length": 10**6}), 413, "length")
    assert_error(client.post("/api/generate", json={"run": "alpha", "stop": ["t"] * 50}), 413, "stop strings")
    assert_error(client.post("/api/score", json={"run": "alpha", "text": "t" * 200_000}), 413)


@pytest.mark.parametrize("path,body,fragment", [
    ("/api/next", {"run": "alpha", "context": "∑"}, "context contains"),
    ("/api/next", {"run": "alpha", "top_p": 0}, "top-p"),
    ("/api/score", {"run": "alpha", "text": "t"}, "nothing to score"),
    ("/api/score", {"run": "alpha", "text": 5}, "text must be a string"),
    ("/api/neurons", {"run": "alpha", "text": "to", "layer": 2}, "layer must be in 0..1"),
    ("/api/neurons", {"run": "alpha", "text": "to", "cell": 24}, "cell must be in 0..23"),
    ("/api/neurons", {"run": "alpha", "text": ""}, "text is empty"),
    ("/api/neurons", {"run": "beta", "text": "to", "kind": "cell"}, "kind must be hidden for this model"),
    ("/api/stop", {"stream": 5}, "stream must be"),
])
def test_other_endpoints_refuse_bad_values(client, path, body, fragment):
    assert_error(client.post(path, json=body), 400, fragment)


def test_unknown_routes_and_methods_are_json_errors(client):
    assert_error(client.get("/api/nothing"), 404, "no such page")
    assert_error(client.get("/api/generate"), 405, "GET is not allowed")


# ----------------------------------------------------------------------------------------------
# other sites cannot drive the server


def test_requests_for_another_host_or_from_another_origin_are_refused(client):
    assert_error(client.get("/api/runs", headers={"host": "evil.example:8000"}), 403, "not this server's")
    assert_error(client.get("/", headers={"host": "127.0.0.1.evil.example"}), 403)
    assert_error(client.post("/api/generate", json={"run": "alpha"}, headers={"origin": "http://evil.example"}),
                 403, "origin")
    assert_error(client.post("/api/generate", json={"run": "alpha"}, headers={"origin": "null"}), 403)
    same = client.post("/api/generate", json={"run": "alpha", "length": 3}, headers={"origin": "http://testserver"})
    assert same.status_code == 200


def test_the_loopback_server_answers_only_its_own_names():
    from charrnn.serve.server import allowed_hosts, is_loopback

    assert allowed_hosts("127.0.0.1", 8123) == {"127.0.0.1:8123", "localhost:8123", "[::1]:8123"}
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_the_sample_limit_over_all_streams_answers_429(runs_dir):
    with TestClient(create_app(runs_dir, allowed_hosts={"testserver"}, max_streams=2)) as c:
        assert_error(c.post("/api/generate", json={"run": "alpha", "num_samples": 3}), 429, "limit is 2")
        assert c.post("/api/generate", json={"run": "alpha", "num_samples": 2, "length": 5}).status_code == 200
        assert c.get("/api/status").json()["streams"] == 0  # every slot given back


def test_models_are_kept_in_a_bounded_cache(runs_dir):
    with TestClient(create_app(runs_dir, allowed_hosts={"testserver"}, max_models=1)) as c:
        for run in ("alpha", "beta", "alpha"):
            assert c.post("/api/generate", json={"run": run, "length": 3}).status_code == 200
            assert [m["run"] for m in c.get("/api/status").json()["models"]] == [run]


def test_a_damaged_checkpoint_is_a_400_and_the_others_still_serve(tmp_path):
    make_run(tmp_path, "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "best.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with TestClient(create_app(tmp_path, allowed_hosts={"testserver"})) as c:
        assert {r["id"] for r in c.get("/api/runs").json()["runs"]} == {"good", "broken"}
        assert_error(c.post("/api/generate", json={"run": "broken"}), 400, "not a readable charrnn checkpoint")
        assert c.post("/api/generate", json={"run": "good", "length": 3}).status_code == 200


def test_neurons_of_a_gru(client):
    got = client.post("/api/neurons", json={"run": "beta", "text": "to be or not"}).json()
    assert got["layer"] == 0 and got["num_layers"] == 1 and len(got["values"]) == 12


def test_served_to_other_machines_it_still_refuses_other_sites(runs_dir):
    with TestClient(create_app(runs_dir, allowed_hosts=None)) as c:  # --allow-remote: any Host
        assert c.get("/api/runs", headers={"host": "192.168.1.5:8000"}).status_code == 200
        assert_error(c.post("/api/generate", json={"run": "alpha"},
                            headers={"host": "192.168.1.5:8000", "origin": "http://evil.example"}), 403, "origin")
        same = c.post("/api/generate", json={"run": "alpha", "length": 3},
                      headers={"host": "192.168.1.5:8000", "origin": "http://192.168.1.5:8000"})
        assert same.status_code == 200
