"""The temperature sweep on a small model trained here: the spectrum's properties, outputs, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import re

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from charrnn import metrics, sweep
from charrnn.cli import main
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError

FAST = sweep.SweepConfig(num_samples=4, length=400)


def sentences(seed: int = 0, count: int = 600) -> str:
    """A corpus with a small closed vocabulary: the model learns its words in a few seconds."""
    rng = random.Random(seed)
    adj = "old young quiet bright little gentle brave dark".split()
    noun = "king queen knight horse castle river garden sword crown letter".split()
    verb = "sees finds loves keeps follows guards carries remembers".split()
    return "".join(f"the {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} the {rng.choice(adj)} "
                   f"{rng.choice(noun)}.\n" for _ in range(count))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1x48 LSTM trained for 300 steps on `sentences()` (about two seconds on a CPU; every seed 1-6 shows the spectrum)."""
    from charrnn import checkpoint
    from charrnn.train import train

    root = tmp_path_factory.mktemp("sweep")
    corpus = root / "sentences.txt"
    text = sentences()
    corpus.write_text(text, encoding="utf-8")
    run_dir = root / "run"
    train(text, run_dir, ModelConfig(embed_dim=16, hidden_size=48, num_layers=1, dropout=0.0),
                TrainConfig(batch_size=16, seq_len=64, max_steps=300, time_budget=None, eval_interval=100,
                            warmup_steps=0, lr=1e-2, device="cpu", precision="fp32", sample_length=0, seed=1),
                corpus={"path": str(corpus), "name": corpus.name})
    return checkpoint.load(run_dir), text, run_dir


@pytest.fixture(scope="module")
def result(trained):
    ckpt, text, _ = trained
    return sweep.run(ckpt.model, ckpt.vocab, text, FAST)


def test_the_spectrum_is_reproduced_on_a_small_model(result):
    """Acceptance: repetition falls and invention rises with T, greedy loops, T=2 invents a third."""
    rhos = result.correlations
    assert rhos["repeated_ngram_share"] <= -0.9
    assert rhos["invented_word_share"] >= 0.9
    greedy = result.setting("greedy")
    assert greedy["loop_periods"][0] > 0
    assert result.setting("T=2")["metrics"]["invented_word_share"]["mean"] >= 1 / 3
    assert result.passed, [c for c in result.checks if not c.passed]


def test_the_model_agrees_entropy_rises_and_readable_text_is_real_words(result):
    low, high = result.setting("T=0.25")["metrics"], result.setting("T=2")["metrics"]
    assert low["entropy"]["mean"] < high["entropy"]["mean"]
    assert low["nll"]["mean"] < high["nll"]["mean"]
    assert low["invented_word_share"]["mean"] < 0.05
    assert low["copied_ngram_share"]["mean"] > high["copied_ngram_share"]["mean"]
    assert result.setting("greedy")["metrics"]["entropy"]["mean"] == 0.0  # argmax: one choice each step


def test_same_seed_and_prime_at_every_temperature(result):
    assert [s["setting"] for s in result.samples].count("T=1") == FAST.num_samples
    assert [s["setting"] for s in result.samples].count("greedy") == 1  # argmax ignores the seed
    for name in FAST.settings[1:]:
        seeds = [s["seed"] for s in result.samples if s["setting"] == name]
        assert seeds == [FAST.seed + i for i in range(FAST.num_samples)]
    assert all(len(s["text"]) == FAST.length for s in result.samples)


def test_a_sweep_is_reproducible(trained, result):
    ckpt, text, _ = trained
    config = sweep.SweepConfig(temperatures=(0.55, 2.0), num_samples=2, length=120)
    again = sweep.run(ckpt.model, ckpt.vocab, text, config)
    texts = {(s["setting"], s["index"]): s["text"] for s in result.samples}
    for s in again.samples:  # same seed, prime and temperature: the very same text
        assert texts[(s["setting"], s["index"])][:120] == s["text"]


def test_the_training_text_is_indexed_once(trained, monkeypatch):
    ckpt, text, _ = trained
    built = []

    class CountingIndex(metrics.CorpusIndex):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(metrics, "CorpusIndex", CountingIndex)
    sweep.run(ckpt.model, ckpt.vocab, text, sweep.SweepConfig(temperatures=(0.5, 1.0, 2.0), num_samples=3, length=50))
    assert built == [1]


def test_outputs_report_and_plots(trained, result, tmp_path):
    _, _, run_dir = trained
    result = dataclasses.replace(result, command=sweep.command_line(run_dir, tmp_path, result.config), source={
        "checkpoint": str(run_dir), "model": "1x48 LSTM", "corpus": "sentences.txt", "corpus_name": "sentences.txt"})
    files = sweep.write(result, tmp_path)
    for key in ("samples", "metrics_csv", "summary_csv", "metrics_json", "sweep_png", "sweep_svg", "spectrum_png",
                "spectrum_svg", "report_md", "report_html"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    assert files["sweep_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["sweep_svg"].read_text(encoding="utf-8").lstrip().startswith("<?xml")
    with open(files["metrics_csv"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + len(FAST.temperatures) * FAST.num_samples  # greedy once, then every sample
    assert rows[0]["setting"] == "greedy" and int(rows[0]["loop_period"]) > 0
    data = json.loads(files["metrics_json"].read_text(encoding="utf-8"))
    assert data["passed"] is True and len(data["summary"]) == len(FAST.settings)
    assert (tmp_path / "samples" / "T0.55.txt").read_text(encoding="utf-8").count("=== T=0.55 sample") == 4
    md = files["report_md"].read_text(encoding="utf-8")
    assert result.command in md and "![" in md and "| T=2 |" in md
    page = files["report_html"].read_text(encoding="utf-8")
    assert page.count("src='data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # self-contained: nothing fetched
    assert "<script" not in page


def test_a_sweep_too_big_to_hold_is_refused_before_any_work():
    from charrnn import sample

    assert sweep.MAX_SAMPLED == sample.MAX_KEPT  # one bound, kept in two places (sample.py imports torch)
    with pytest.raises(CharRNNError, match="absurdly many"):
        sweep.SweepConfig(num_samples=101, length=1_000_000)
    sweep.SweepConfig(num_samples=100, length=1_000_000)  # at the bound: fine


def test_command_line_regenerates_the_same_config(tmp_path):
    config = sweep.SweepConfig(temperatures=(0.2, 1.5), greedy=False, num_samples=3, length=77, seed=5,
                               prime="ROMEO: it's")
    line = sweep.command_line("runs/a b", tmp_path, config)
    assert "'runs/a b'" in line and "--no-greedy" in line and "--prime 'ROMEO: it'\"'\"'s'" in line
    assert "--temperatures 0.2,1.5" in line


@pytest.mark.parametrize("bad", ["", "0.5,abc", "0", "-1", "nan", "1e9"])
def test_bad_temperatures_are_one_clear_error(bad):
    with pytest.raises(CharRNNError):
        sweep.SweepConfig(temperatures=sweep.parse_temperatures(bad))


def test_config_validation():
    assert sweep.SweepConfig(temperatures=(2.0, 0.5)).temperatures == (0.5, 2.0)
    for kwargs in ({"num_samples": 0}, {"length": 0}, {"temperatures": (0.5, 0.5)},
                   {"temperatures": (), "greedy": False}, {"seed": -1}):
        with pytest.raises(CharRNNError):
            sweep.SweepConfig(**kwargs)


def test_checks_fail_when_a_property_is_missing():
    flat = {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    summary = [{"setting": f"T={t:g}", "temperature": t, "greedy": False, "num_samples": 1, "loop_periods": [0],
                "metrics": {k: flat for k in sweep.METRIC_KEYS}} for t in (0.5, 1.0)]
    checks = sweep.check_spectrum(summary, sweep.correlations(summary))
    assert [c.passed for c in checks] == [False, False, False, False]
    assert all(math.isnan(v) for v in sweep.correlations(summary).values())
    # Two temperatures cannot show a trend: the checks say so instead of printing "rho = nan".
    assert [c.detail for c in checks[:2]] == ["needs at least 3 temperatures to show a trend, got 2"] * 2
    assert "nan" not in " ".join(c.detail for c in checks)


@pytest.mark.parametrize("temperatures, greedy, needs", [
    ((0.5, 2.0), True, "at least 3 temperatures (got 2)"),
    ((2.0,), True, "at least 3 temperatures (got 1)"),
    ((0.5, 1.0, 2.0), False, "greedy decoding (drop --no-greedy)"),
    ((0.5, 1.0, 1.5), True, "T=2 among the temperatures"),
])
def test_what_check_needs_is_named_before_sampling(temperatures, greedy, needs):
    unmet = sweep.unmet_check_needs(sweep.SweepConfig(temperatures=temperatures, greedy=greedy))
    assert len(unmet) == 1 and unmet[0].startswith(needs), unmet
    assert sweep.unmet_check_needs(sweep.SweepConfig(temperatures=(0.5, 1.0, 2.0))) == []


def test_a_prime_the_model_cannot_read_is_refused(trained):
    ckpt, text, _ = trained
    with pytest.raises(CharRNNError, match="never saw"):
        sweep.run(ckpt.model, ckpt.vocab, text, sweep.SweepConfig(prime="the €"))


def run_cli(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_sweep_writes_a_folder_and_checks(trained, tmp_path):
    _, _, run_dir = trained
    out = tmp_path / "out"
    args = ["sweep", "-c", run_dir, "--out", out, "--temperatures", "0.25,1,2", "--num-samples", "2",
            "--length", "300"]
    ok = run_cli([*args, "--check"])
    assert ok.exit_code == 0, ok.output
    assert "[pass] greedy decoding ends in a loop" in ok.output
    assert (out / "report.html").is_file() and (out / "spectrum.png").is_file()
    data = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert data["command"].startswith("charrnn sweep -c ") and data["source"]["corpus_name"] == "sentences.txt"
    # With fewer than 3 temperatures and without T=2 the properties cannot be shown: --check is refused
    # before any sampling, with one line saying why (it printed "rho = nan" and four FAILs).
    failed = run_cli(["sweep", "-c", run_dir, "--out", tmp_path / "o2", "--temperatures", "0.25,1",
                      "--num-samples", "1", "--length", "100", "--check"])
    line = one_error_line(failed, "--check needs at least 3 temperatures (got 2)", "T=2")
    assert "nan" not in failed.output and "FAIL" not in failed.output, line
    assert not (tmp_path / "o2").exists()


def test_cli_sweep_without_its_corpus_says_what_to_do(trained, tmp_path):
    from charrnn import checkpoint

    ckpt, _, run_dir = trained
    moved = tmp_path / "run"
    moved.mkdir()
    meta = {**ckpt.meta, "corpus": {**ckpt.meta["corpus"], "path": str(tmp_path / "gone.txt")}}
    checkpoint.save(moved / checkpoint.BEST, ckpt.model, meta)
    result = run_cli(["sweep", "-c", moved, "--out", tmp_path / "o", "--length", "20", "--num-samples", "1"])
    assert result.exit_code == 1
    assert "--corpus" in result.output and "Traceback" not in result.output
    given = tmp_path / "given.txt"
    given.write_text(sentences(), encoding="utf-8")
    ok = run_cli(["sweep", "-c", moved, "--out", tmp_path / "o", "--length", "60", "--num-samples", "1",
                  "--temperatures", "1", "--corpus", given])
    assert ok.exit_code == 0, ok.output


def test_cli_sweep_of_a_single_setting_draws_its_figures(trained, tmp_path):
    _, _, run_dir = trained
    out = tmp_path / "one"
    result = run_cli(["sweep", "-c", run_dir, "--out", out, "--temperatures", "1", "--no-greedy",
                      "--num-samples", "1", "--length", "40"])
    assert result.exit_code == 0, result.output
    for name in ("spectrum.png", "sweep.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in ("spectrum.svg", "sweep.svg"):
        assert "<svg" in (out / name).read_text(encoding="utf-8"), name
    assert "T=1" in (out / "report.md").read_text(encoding="utf-8")


SETTING_COUNTS = [((), True), ((1.0,), True), ((1.0,), False), ((0.5, 2.0), True), ((0.5, 2.0), False),
                  ((0.25, 1.0, 2.0), False)]


@pytest.mark.parametrize("temperatures, greedy", SETTING_COUNTS,
                         ids=[f"{len(t) + g}{'-greedy' if g else ''}" for t, g in SETTING_COUNTS])
def test_figures_are_drawn_for_any_number_of_settings(trained, tmp_path, temperatures, greedy):
    ckpt, text, _ = trained
    config = sweep.SweepConfig(temperatures=temperatures, greedy=greedy, num_samples=1, length=30)
    files = sweep.write(sweep.run(ckpt.model, ckpt.vocab, text, config), tmp_path)
    for key in ("spectrum_png", "spectrum_svg", "sweep_png", "sweep_svg", "report_html"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(
        sweep.sample_file_name(name) for name in config.settings)


def test_temperatures_with_the_same_label_are_refused(trained, tmp_path):
    # Both would be reported as T=0.1: one summary row, one samples/T0.1.txt overwritten by the other.
    with pytest.raises(CharRNNError, match=r"0\.1 and 0\.1000001 would both be reported as T=0\.1"):
        sweep.SweepConfig(temperatures=(0.1000001, 0.1))
    _, _, run_dir = trained
    out = tmp_path / "out"
    result = run_cli(["sweep", "-c", run_dir, "--out", out, "--temperatures", "0.1,0.1000001", "--num-samples", "1",
                      "--length", "20"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [
        "Error: temperatures 0.1 and 0.1000001 would both be reported as T=0.1; "
        "give temperatures that differ in their first 6 significant digits"]
    assert not out.exists()


def test_close_temperatures_with_distinct_labels_keep_their_exact_values():
    config = sweep.SweepConfig(temperatures=(0.1, 0.100001, 0.1234567), greedy=False)
    assert config.settings == ["T=0.1", "T=0.100001", "T=0.123457"]
    line = sweep.command_line("run", "out", config)
    given = line.split("--temperatures ")[1].split()[0]
    assert given == "0.1,0.100001,0.1234567"  # the command regenerates these temperatures, not rounded ones
    assert sweep.parse_temperatures(given) == config.temperatures
