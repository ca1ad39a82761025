"""Continuous batching: streams on one model are stepped together, join and leave between steps,
and each one's text is the text the library gives for the same request alone."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("starlette")

from serve_runs import make_run  # noqa: E402

from charrnn.checkpoint import load  # noqa: E402
from charrnn.sample import inspect_steps, stream  # noqa: E402
from charrnn.serve.requests import parse_generate  # noqa: E402
from charrnn.serve.scheduler import ModelWorker, Stream  # noqa: E402

# Settings that take every branch of the one decoding chain (plain temperature, greedy, filters,
# ε, the repetition penalty), with and without per-step candidates; the first and the candidates
# row share settings, so they are decided together in one group.
SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 0.7},
    {"greedy": True},
    {"temperature": 0.9, "top_k": 5},
    {"temperature": 1.1, "top_p": 0.8},
    {"temperature": 1.0, "epsilon": 0.3},
    {"temperature": 0.8, "repetition_penalty": 1.5, "repetition_window": 7},
    {"temperature": 1.0, "candidates": 3},
    {"greedy": True, "repetition_penalty": 1.3, "candidates": 2},
    {"temperature": 1.0, "stop": ["e "]},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return load(make_run(tmp_path_factory.mktemp("runs"), "alpha", seed=5))


def alone(ckpt, req, seed):
    """The text the library gives for this request alone."""
    if req.candidates:
        return "".join(v.chosen for v in inspect_steps(ckpt.model, ckpt.vocab, req.length, prime=req.prime,
                                                       decoding=req.decoding, seed=seed, stop=req.stops))
    return "".join(stream(ckpt.model, ckpt.vocab, req.length, prime=req.prime, decoding=req.decoding, seed=seed,
                          stop=req.stops))


def text_of(s: Stream) -> str:
    assert s.done.wait(30)
    return "".join(item if isinstance(item, str) else item.get("c", "") for item in s.pending)


def test_streams_batched_together_give_the_texts_each_gives_alone(checkpoint):
    worker = ModelWorker(checkpoint, "alpha")
    try:
        gate = threading.Event()
        worker.submit(gate.wait)  # hold the worker so every stream below joins the same first step
        streams = []
        for i, settings in enumerate(SETTINGS):
            req = parse_generate({"run": "alpha", "prime": "to be" if i % 2 else "", "length": 150 + 10 * i,
                                  "seed": 100 + i, **settings}, checkpoint.vocab)
            streams.append(Stream(req, req.seed, None))
            worker.start(streams[-1])
        gate.set()
        # a late stream joins mid-way, while the others are running
        late_req = parse_generate({"run": "alpha", "prime": "ROMEO", "length": 90, "seed": 7, "top_k": 8},
                                  checkpoint.vocab)
        late = Stream(late_req, 7, None)
        while worker.steps < 20:
            threading.Event().wait(0.001)
        worker.start(late)
        for s in [*streams, late]:
            assert text_of(s) == alone(checkpoint, s.request, s.seed), s.request
            if s.request.candidates:  # and each step's candidates are inspect_steps' for the request alone
                req = s.request
                views = list(inspect_steps(checkpoint.model, checkpoint.vocab, req.length, prime=req.prime,
                                           top=req.candidates, decoding=req.decoding, seed=s.seed, stop=req.stops))
                steps = [item for item in s.pending if isinstance(item, dict) and "c" in item]
                assert [step["p"] for step in steps] == pytest.approx([v.chosen_prob for v in views])
                assert [[c for c, _ in step["top"]] for step in steps] == [[c for c, _ in v.candidates] for v in views]
        assert worker.max_batch >= len(SETTINGS)  # they really were stepped together
        assert worker.active == 0  # and every row left the batch at its end
    finally:
        worker.close()


def test_a_cancelled_stream_leaves_the_batch_at_the_next_step(checkpoint):
    worker = ModelWorker(checkpoint, "alpha")
    try:
        req = parse_generate({"run": "alpha", "length": 20_000, "seed": 1}, checkpoint.vocab)
        keep, drop = Stream(req, 1, None), Stream(req, 2, None)
        worker.start(keep)
        worker.start(drop)
        while worker.active < 2:
            threading.Event().wait(0.001)
        drop.cancel()
        assert drop.done.wait(5)
        steps_at_cancel = drop.step
        assert worker.active == 1 and drop.pending[-1]["end"]["reason"] == "stopped"
        keep.cancel()
        assert keep.done.wait(5) and worker.active == 0
        assert steps_at_cancel < 20_000
    finally:
        worker.close()
