"""Shared fixtures: small texts the tests write themselves, tiny configs, CPU only."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from charrnn.config import ModelConfig, TrainConfig

# Property tests draw the same examples on every run and machine (a test that passes by luck is a
# bug, and CI must fail or pass as it did here); HYPOTHESIS_PROFILE=explore draws new ones each run.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

VERSE = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\n¿Qué pasó, señor? — ¡Ay! O Romeo, Romeo, wherefore art thou Romeo?\n\n"
)


@pytest.fixture
def tiny_text() -> str:
    """About 6 kB of play-like text with line breaks and non-ASCII characters."""
    return VERSE * 36


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return ModelConfig(vocab_size=1, embed_dim=16, hidden_size=32, num_layers=1, dropout=0.0)


@pytest.fixture
def tiny_train_config() -> TrainConfig:
    return TrainConfig(batch_size=8, seq_len=16, max_steps=60, time_budget=None, eval_interval=20,
                       warmup_steps=0, lr=2e-2, device="cpu", precision="fp32", sample_length=0,
                       log_interval=5)


@pytest.fixture
def text_file(tmp_path, tiny_text):
    path = tmp_path / "play.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _corpus_cache_in_tmp(tmp_path_factory, monkeypatch):
    """`charrnn train` caches encoded corpora (charrnn.corpus_cache): keep them out of ~/.cache."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "corpus-cache"))


@pytest.fixture(autouse=True)
def _fixed_threads(monkeypatch):
    """One thread unless a test says otherwise: runs repeat bit for bit at a fixed thread count,
    and the automatic choice (charrnn.threads) is tested on its own. The plan an in-process CLI
    call made is forgotten after each test."""
    monkeypatch.setenv("CHARRNN_THREADS", "1")
    yield
    from charrnn import threads

    threads.reset()


def one_error_line(result, *fragments: str) -> str:
    """A CLI failure as users must see it: non-zero exit, no traceback, exactly one "Error" line
    naming every fragment, and nothing on stdout (a pipeline gets no half a result). Returns that line."""
    output = result.output
    assert result.exit_code not in (0, None), output
    assert "Traceback" not in output, output
    assert result.stdout == "", output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
