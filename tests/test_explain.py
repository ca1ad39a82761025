"""`charrnn explain`: the views' numbers, the cell finder's statistics, the n-gram baseline, the page, the CLI."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import explain as ex
from charrnn.cli import main
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.explain_page import render_page, script_json
from charrnn.internals import run_internals
from charrnn.model import CharRNN
from charrnn.ngram import NgramModel
from charrnn.properties import text_properties
from charrnn.sample import Decoding, sampling_distribution
from charrnn.scoring import ngram_score, score_text
from charrnn.vocab import Vocab


def play(seed: int = 0, count: int = 160) -> str:
    """Speeches under capitalised speaker names, with quotes and brackets: the blog's properties."""
    rng = random.Random(seed)
    words = "the old king sees a young queen and she loves his bright sword in the quiet garden".split()
    out = []
    for _ in range(count):
        out.append(rng.choice(["ROMEO", "JULIET", "NURSE", "FRIAR"]) + ":\n")
        for _ in range(rng.randint(1, 3)):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
            if rng.random() < 0.4:
                line += ' "' + " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) + '"'
            if rng.random() < 0.3:
                line += " (" + " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) + ")"
            out.append(line.capitalize() + ".\n")
        out.append("\n")
    return "".join(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1x32 LSTM trained for 200 steps on `play()` (a few seconds), with its corpus recorded."""
    from charrnn import checkpoint
    from charrnn.train import train

    root = tmp_path_factory.mktemp("explain")
    corpus = root / "play.txt"
    text = play()
    corpus.write_text(text, encoding="utf-8")
    train(text, root / "run", ModelConfig(embed_dim=16, hidden_size=32, num_layers=1, dropout=0.0),
          TrainConfig(batch_size=16, seq_len=64, max_steps=200, time_budget=None, eval_interval=100,
                      warmup_steps=0, lr=1e-2, device="cpu", precision="fp32", sample_length=0, seed=1),
          corpus={"path": str(corpus), "name": corpus.name})
    return checkpoint.load(root / "run"), text, root / "run"


def _random_model(kind: str = "lstm", layers: int = 2, vocab_size: int = 12) -> CharRNN:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab_size, embed_dim=8, hidden_size=10, num_layers=layers, model=kind))
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(3.0)
    return model.eval()


TEXT = 'AB: "ab (c) d" e.\nab cd (e (f)) "g".\nCD:\na b.\n' * 6


def test_properties_describe_the_text_up_to_each_character():
    props = {p.name: p for p in text_properties('x "ab" (c(d))\nEF:\ny', after=["\n"], patterns=["ef=[EF]+"])}
    text = 'x "ab" (c(d))\nEF:\ny'
    at = {name: "".join(str(int(v)) for v in p.values) for name, p in props.items()}
    assert at["inside quotes"] == "0011100000000000000"  # the opening quote is inside, the closing one not
    assert props["bracket depth"].values.tolist()[7:13] == [1, 1, 2, 2, 1, 0]
    assert props["line position"].values[text.index("\n")] == 0 and props["line position"].values[-1] == 1
    assert at["capitals line"] == "0000000000000011100"
    assert at["word start"] == "1001000010100010001"
    assert at["after \\n"] == "0000000000000100010" and at["ef"] == "0000000000000011000"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_finder_scores_equal_auc_and_pearson_computed_directly(kind):
    """Histogram AUC (int8 activations) and streamed Pearson r equal the textbook formulas on all activations."""
    vocab = Vocab.from_text(TEXT)
    model = _random_model(kind, vocab_size=len(vocab))
    result = ex.explain(model, vocab, TEXT, top_cells=40, chunk=37)  # chunks split the text unevenly
    internals = run_internals(model, vocab.encode(TEXT))
    x = ex.scaled_cells(internals, kind)
    q = np.rint(x * 127)
    props = {p.name: p for p in text_properties(TEXT)}
    for r in result.finder:
        y = props[r.name].values
        for cs in r.ranked[:5]:
            col = ex._cell_column(cs.cell, kind, 10)
            if r.kind == "binary":
                pos, neg = q[y > 0.5, col], q[y <= 0.5, col]
                greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
                assert cs.score == pytest.approx(greater, abs=1e-9), r.name
            else:
                assert cs.score == pytest.approx(np.corrcoef(x[:, col], y)[0, 1], abs=1e-5), r.name
        strength = [abs(c.score - r.chance) for c in r.ranked]
        assert strength == sorted(strength, reverse=True)
        assert len(r.ranked) == 2 * (2 if kind == "lstm" else 1) * 10  # every cell of every layer is scored


def test_the_finder_scores_the_same_however_its_histograms_are_batched(monkeypatch):
    """The finder histograms several chunks at once (a long text's speed); batches that end mid-chunk
    and a text ending mid-batch give the scores of one batch for the whole text."""
    import charrnn.cell_finder as cell_finder

    vocab = Vocab.from_text(TEXT)
    model = _random_model(vocab_size=len(vocab))
    whole = ex.explain(model, vocab, TEXT, top_cells=40, chunk=37)
    monkeypatch.setattr(cell_finder, "FLUSH_ROWS", 50)
    batched = ex.explain(model, vocab, TEXT, top_cells=40, chunk=37)
    assert [[(str(c.cell), c.score) for c in r.ranked] for r in whole.finder] == \
           [[(str(c.cell), c.score) for c in r.ranked] for r in batched.finder]
    assert [r.control for r in whole.finder] == [r.control for r in batched.finder]


def test_every_view_is_the_same_whatever_the_chunk_size():
    vocab = Vocab.from_text(TEXT)
    model = _random_model(vocab_size=len(vocab))
    a = ex.explain(model, vocab, TEXT, cells=["1:c:3", "2:h:9"], chunk=29)
    b = ex.explain(model, vocab, TEXT, cells=["1:c:3", "2:h:9"], chunk=4096)
    np.testing.assert_allclose(a.predictions.prob, b.predictions.prob, rtol=1e-5)
    assert (a.predictions.top_ids == b.predictions.top_ids).all()
    assert [[(str(c.cell), round(c.score, 6)) for c in r.ranked] for r in a.finder] == \
           [[(str(c.cell), round(c.score, 6)) for c in r.ranked] for r in b.finder]
    np.testing.assert_allclose(a.cells["1:c:3"], b.cells["1:c:3"], atol=1 / 127)
    assert a.lens.position == b.lens.position >= 40  # the default lens has some text before it
    for ga, gb in zip(a.gates, b.gates, strict=True):
        np.testing.assert_allclose(ga.left, gb.left)


def test_predictions_agree_with_score_and_the_lens_with_the_sampler():
    vocab = Vocab.from_text(TEXT)
    model = _random_model(vocab_size=len(vocab))
    result = ex.explain(model, vocab, TEXT, top_k=3, lens_position=20, temperatures=(0.5, 2.0), lens_top_k=2,
                        lens_top_p=0.5)
    pred = result.predictions
    assert np.isnan(pred.prob[0]) and (pred.top_ids[0] == -1).all()
    assert float(np.nanmean(pred.surprisal)) == pytest.approx(score_text(model, vocab, TEXT).nats_per_char, rel=1e-5)
    assert (pred.top_probs[1:, 0] >= pred.prob[1:] - 1e-6).all()  # the best candidate is at least as likely
    assert (np.diff(pred.top_probs[1:], axis=1) <= 0).all()
    lens = result.lens
    assert lens.position == 20 and lens.actual == TEXT[20] and lens.context.endswith(TEXT[:20][-10:])
    with torch.no_grad():
        logits = model(torch.tensor([vocab.encode(TEXT[:20])]))[0][0, -1]
    for (_label, probs), decoding in zip(lens.rows, [Decoding(temperature=0.5), Decoding(temperature=2.0),
                                                    Decoding(top_k=2), Decoding(top_p=0.5)], strict=True):
        np.testing.assert_allclose(probs, sampling_distribution(logits.numpy()[None], decoding)[0], atol=1e-6)
    assert [label for label, _ in lens.rows] == ["T=0.5", "T=2", "T=1 top-k 2", "T=1 top-p 0.5"]
    assert (lens.rows[2][1] > 0).sum() == 2
    for g in result.gates:
        assert ((g.left >= 0) & (g.left + g.right <= 1 + 1e-9)).all()
    assert [(g.layer, g.gate) for g in result.gates] == [(1, "i"), (1, "f"), (1, "o"), (2, "i"), (2, "f"), (2, "o")]


def test_ngram_is_a_distribution_and_learns_the_text():
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    vocab = Vocab.from_text(text + "XYZ")
    ids = vocab.encode(text)
    losses = []
    for order in (1, 2, 3, 5):
        model = NgramModel.fit(ids, order, len(vocab))
        context = vocab.encode("on the m")
        assert sum(model.probabilities([*context, w])[-1] for w in range(len(vocab))) == pytest.approx(1.0)
        assert model.probabilities(vocab.encode("aX"))[-1] > 0  # an unseen character keeps some mass
        losses.append(float(model.surprisal(ids).mean()))
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.2
    with pytest.raises(CharRNNError, match="order"):
        NgramModel.fit(ids, 0, len(vocab))


def test_ngram_score_reads_the_same_characters_as_the_model(trained):
    ckpt, text, _ = trained
    val = text[-600:]
    for context in ("", "ROMEO:\n"):
        model = score_text(ckpt.model, ckpt.vocab, val, context=context)
        ngram = ngram_score(ckpt.vocab, text[:-600], val, 3, context=context)
        assert ngram.num_chars == model.num_chars and 0.3 < ngram.nats_per_char < 3.0


def test_the_finder_finds_cells_far_from_chance_on_a_trained_model(trained):
    ckpt, text, _ = trained
    result = ex.explain(ckpt.model, ckpt.vocab, text[-4000:])
    by_name = {r.name: r for r in result.finder}
    caps = by_name["capitals line"]
    assert abs(caps.best.score - 0.5) > 0.4 and abs(caps.control - 0.5) < 0.25  # a speaker-name cell, measured
    assert abs(by_name["inside word"].best.score - 0.5) > 0.3
    assert result.finder and all(r.present for r in result.finder)


def test_page_embeds_the_text_as_data_never_as_markup():
    nasty = 'ab</script><script>alert(1)</script><b>bold</b><!-- & \u2028 {{DATA}}\n' * 3
    vocab = Vocab.from_text(nasty)
    model = _random_model(vocab_size=len(vocab))
    page = render_page(ex.explain(model, vocab, nasty), title="<i>t</i>")
    assert page.count("</script>") == 2 and "<b>bold" not in page and "<i>t</i>" not in page
    assert "alert(1)</script>" not in page and "<!--" not in page
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(block)["text"] == nasty
    assert script_json({"a": "</script>&"}) == '{"a":"\\u003c/script\\u003e\\u0026"}'


def run_cli(args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def test_cli_explain_writes_a_page_and_figures_for_the_runs_validation_text(trained, tmp_path):
    _, text, run_dir = trained
    out = tmp_path / "page"
    result = run_cli(["explain", "-c", run_dir, "--out", out, "--ngram", "3", "--cell", "1:c:0", "--property",
                      "speaker=^[A-Z]+:$", "--length", "3000"])
    assert result.exit_code == 0, result.output
    assert "capitals line" in result.stdout and "speaker" in result.stdout
    for name in ("explain.html", "gates.png", "gates.svg", "temperature.png", "temperature.svg", "cells.png", "cells.svg",
                 "finder.csv"):
        assert (out / name).is_file(), name
    assert (out / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "explain.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    n_train = int(len(text) * 0.9)
    assert data["text"] == text[n_train : n_train + 3000] and data["ngram"]["order"] == 3
    assert data["userCells"] == ["1:c:0"] and "http" not in page.split("<script")[0]  # nothing to fetch


def test_cli_explain_reads_stdin_and_slices(trained, tmp_path):
    _, text, run_dir = trained
    result = run_cli(["explain", "-", "-c", run_dir, "--out", tmp_path / "o", "--start", "10", "--length", "200",
                      "--position", "50"], input=text[:1000])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "o" / "explain.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert data["text"] == text[10:210] and data["lens"]["position"] == 50


def test_score_reports_the_ngram_beside_the_model(trained, tmp_path):
    _, text, run_dir = trained
    val = tmp_path / "val.txt"
    val.write_text(text[-2000:], encoding="utf-8")
    result = run_cli(["score", val, "-c", run_dir, "--ngram", "4"])
    assert result.exit_code == 0, result.output
    assert "order-4 n-gram (interpolated Kneser-Ney" in result.output and "nats/char better" in result.output
    one_error_line(run_cli(["score", val, "-c", run_dir, "--corpus", val]), "--corpus", "--ngram")
    one_error_line(run_cli(["score", val, "-c", run_dir, "--ngram", "0"]), "order")


@pytest.mark.parametrize("args,fragments", [
    (["--cell", "2:h:0"], ["layer 2 is out of range", "1..1"]),
    (["--cell", "1:c:32"], ["unit 32 is out of range", "0..31"]),
    (["--cell", "one"], ["LAYER:h|c:UNIT"]),
    (["--property", "bad=("], ["bad", "does not compile"]),
    (["--property", "noequals"], ["NAME=REGEX"]),
    (["--start", "10000000"], ["past the end"]),
    (["--position", "0"], ["lens position"]),
    (["--top-k", "0"], ["top-k"]),
    (["--temperatures", "0"], ["temperature"]),
    (["--ngram", "99"], ["order"]),
    (["--lens-top-k", "0"], ["top-k must be"]),
    (["--lens-top-p", "1.5"], ["top-p must be"]),
])
def test_cli_explain_bad_input_is_one_line(trained, tmp_path, args, fragments):
    _, _, run_dir = trained
    out = tmp_path / "o"
    one_error_line(run_cli(["explain", "-c", run_dir, "--out", out, "--length", "300", *args]), *fragments)
    assert not (out / "explain.html").exists()


def test_cli_explain_unknown_and_empty_texts(trained, tmp_path):
    _, _, run_dir = trained
    odd = tmp_path / "odd.txt"
    odd.write_text("the king € sees the queen ☃", encoding="utf-8")
    one_error_line(run_cli(["explain", odd, "-c", run_dir, "--out", tmp_path / "o"]), "not in the vocabulary", "--unknown skip")
    ok = run_cli(["explain", odd, "-c", run_dir, "--out", tmp_path / "o", "--unknown", "skip"])
    assert ok.exit_code == 0, ok.output
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    one_error_line(run_cli(["explain", empty, "-c", run_dir, "--out", tmp_path / "o2"]), "empty")
    one_error_line(run_cli(["explain", "-", "-c", run_dir, "--out", tmp_path / "o2"], input=""), "empty")
    one_error_line(run_cli(["explain", "-", "-c", run_dir, "--out", tmp_path / "o2"], input="€"), "not in the vocabulary")


def test_train_records_each_evaluations_sample_and_explain_shows_the_timeline(tmp_path):
    from charrnn.timeline import timeline, timeline_markdown

    corpus = tmp_path / "play.txt"
    corpus.write_text(play(count=80), encoding="utf-8")
    run = tmp_path / "run"
    trained = run_cli(["train", corpus, "--out", run, "--max-steps", "40", "--eval-interval", "20", "--hidden-size", "16",
                       "--num-layers", "1", "--embed-dim", "8", "--batch-size", "8", "--seq-len", "32",
                       "--sample-length", "30", "--precision", "fp32", "--device", "cpu", "-q"])
    assert trained.exit_code == 0, trained.output
    entries = timeline(run)
    assert [e.step for e in entries] == [20, 40]
    assert all(e.sample and e.val_loss is not None and e.train_loss is not None for e in entries)
    assert "| 20 |" in timeline_markdown(entries) and "**step 40**" in timeline_markdown(entries)
    with (run / "samples.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"step": 40, "samp')  # a torn last line is skipped
    assert [e.step for e in timeline(run)] == [20, 40]
    out = tmp_path / "page"
    shown = run_cli(["explain", "-c", run, "--out", out, "--length", "400"])
    assert shown.exit_code == 0, shown.output
    page = (out / "explain.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert [e["step"] for e in data["timeline"]] == [20, 40] and data["timeline"][0]["sample"] == entries[0].sample
    assert (out / "timeline.md").is_file()


def test_the_sample_record_follows_resume(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    import dataclasses

    from charrnn.timeline import SAMPLES_FILE, read_samples
    from charrnn.train import resume, train

    cfg = dataclasses.replace(tiny_train_config, max_steps=40, sample_length=12)
    run = tmp_path / "run"
    train(tiny_text, run, tiny_model_config, cfg)
    with (run / SAMPLES_FILE).open("a", encoding="utf-8") as f:  # a sample from beyond the checkpoint (killed run)
        f.write('{"step": 60, "val_loss": 1.0, "sample": "lost"}\n')
    resume(tiny_text, run, max_steps=80)
    samples = read_samples(run)
    assert sorted(samples) == [20, 40, 60, 80] and samples[60] != "lost"
    assert len((run / SAMPLES_FILE).read_text(encoding="utf-8").splitlines()) == 4  # trimmed at the resume point
    assert all(len(s) >= 12 for s in samples.values())


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_gru_and_rnn_models_get_their_own_gates_and_a_page(kind, tmp_path):
    from charrnn.explain_page import write_explanation

    vocab = Vocab.from_text(TEXT)
    model = _random_model(kind, vocab_size=len(vocab))
    result = ex.explain(model, vocab, TEXT, cells=["2:h:1"])
    assert [g.gate for g in result.gates] == ([] if kind == "rnn" else ["r", "z", "r", "z"])
    with pytest.raises(CharRNNError, match="no cell state"):
        ex.explain(model, vocab, TEXT, cells=["1:c:0"])
    written = write_explanation(result, tmp_path)
    assert ("gates_png" in written) == (kind == "gru") and written["html"].is_file()
