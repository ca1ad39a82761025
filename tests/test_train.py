import json
import math
import time

import pytest
import torch

from charrnn import checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.train import Trainer, fine_tune, lr_at, resume, train


def _params(run_dir, name="last.pt"):
    return checkpoint.load(run_dir / name).model.state_dict()


def test_loss_falls_and_best_checkpoint_is_kept(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    events = []
    result = train(tiny_text, tmp_path / "run", tiny_model_config, tiny_train_config, log=events.append)
    val = result.history["val_loss"]
    assert len(val) == 3 and val[-1] < val[0] - 0.5  # it learns the repeated verse
    assert result.best_val_loss == min(val)
    assert math.isclose(result.best_val_bits, result.best_val_loss / math.log(2))
    for name in ("best.pt", "last.pt", "meta.json", "metrics.jsonl", "losses.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61))  # one line per step
    assert any(e["event"] == "step" and e["chars_per_sec"] > 0 for e in events)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["vocab"] == sorted(set(tiny_text)) and meta["model_config"]["hidden_size"] == 32


def test_the_largest_seed_trains(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    cfg = tiny_train_config.replace(seed=2**63 - 1, max_steps=3, eval_interval=3)
    assert train(tiny_text, tmp_path / "run", tiny_model_config, cfg).step == 3


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_other_cores_train(tmp_path, tiny_text, tiny_model_config, tiny_train_config, kind):
    cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "model": kind})
    result = train(tiny_text, tmp_path / kind, cfg, tiny_train_config)
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    assert checkpoint.load(tmp_path / kind).model_config.model == kind


@pytest.mark.parametrize("regularised", [False, True], ids=["plain", "weight-drop-and-ema"])
def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_text, tiny_model_config, tiny_train_config, regularised):
    # 32 steps straight vs 16, stop, resume to 32. The text is short enough that the run crosses an
    # epoch boundary (new offset, state reset), and dropout makes the RNG state matter too. With weight
    # drop and a moving average of the weights, the mask draws and the average must carry over as well.
    cfg = tiny_train_config.replace(max_steps=32, eval_interval=8, warmup_steps=5, decay_steps=32, batch_size=16,
                                    ema=0.9 if regularised else 0.0)
    model_cfg = ModelConfig.from_dict({**tiny_model_config.to_dict(), "dropout": 0.2,
                                       "weight_drop": 0.3 if regularised else 0.0})
    straight = train(tiny_text, tmp_path / "straight", model_cfg, cfg)
    train(tiny_text, tmp_path / "split", model_cfg, cfg.replace(max_steps=16))
    resumed = resume(tiny_text, tmp_path / "split", max_steps=32)
    assert resumed.step == straight.step == 32
    assert resumed.history["epoch"][-1] > 1.0
    for name in ("last.pt", "best.pt"):
        a, b = _params(tmp_path / "straight", name), _params(tmp_path / "split", name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for key in ("step", "epoch", "train_loss", "val_loss", "lr"):
        assert straight.history[key] == resumed.history[key], key
    averages = [checkpoint.load(tmp_path / run / "last.pt").train_state["ema"] for run in ("straight", "split")]
    if regularised:
        for a, b in zip(*averages, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        assert averages == [None, None]


def test_ema_scores_keeps_and_samples_the_averaged_weights(tmp_path, tiny_text, tiny_model_config,
                                                            tiny_train_config):
    # With --ema the best checkpoint holds the moving average (what the reported loss scored and what
    # `charrnn sample` reads), last.pt the weights training goes on from, with the average beside them.
    cfg = tiny_train_config.replace(max_steps=40, eval_interval=40, ema=0.9)
    result = train(tiny_text, tmp_path / "run", tiny_model_config, cfg)
    assert result.best_step == 40
    best = checkpoint.load(tmp_path / "run" / "best.pt")
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    average = last.train_state["ema"]
    for averaged, kept in zip(average, best.model.parameters(), strict=True):
        torch.testing.assert_close(averaged, kept.detach(), rtol=0, atol=0)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(average, last.model.parameters(), strict=True))
    # The average is a smoothed copy of the training weights: near them, not equal.
    gap = max(float((a - p.detach()).abs().max()) for a, p in zip(average, last.model.parameters(), strict=True))
    assert 0 < gap < 0.5


def test_resume_refuses_another_alphabet(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    train(tiny_text, tmp_path / "run", tiny_model_config, tiny_train_config.replace(max_steps=5))
    with pytest.raises(CharRNNError, match="does not match"):
        resume(tiny_text + "XYZ" * 10, tmp_path / "run", max_steps=10)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    # A huge constant learning rate makes validation worse after the first evaluations.
    cfg = tiny_train_config.replace(max_steps=400, eval_interval=2, patience=2, lr=0.3, lr_schedule="constant",
                                    grad_clip=100.0)
    try:
        result = train(tiny_text, tmp_path / "run", tiny_model_config, cfg)
    except CharRNNError as exc:  # divergence is also an acceptable way for this run to end
        assert "last good checkpoint is kept" in str(exc)
        assert (tmp_path / "run" / "best.pt").exists()
        return
    assert result.stop_reason == "early_stop" and result.step < 400
    best = checkpoint.load(tmp_path / "run" / "best.pt")
    assert best.meta["step"] == result.best_step
    assert result.history["val_loss"][-1] > result.best_val_loss


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    trainer = Trainer(tiny_text, tmp_path / "run", tiny_model_config, tiny_train_config)
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))
    with pytest.raises(CharRNNError, match=r"loss became nan at step 1; try a lower --lr \(now 0.02\); nothing was saved"):
        trainer.run()
    assert not (tmp_path / "run").exists()  # a run that saved nothing leaves no folder to take the name


def test_fine_tune_grows_vocabulary_and_keeps_old_embeddings(tmp_path, tiny_text, tiny_model_config,
                                                             tiny_train_config):
    train(tiny_text, tmp_path / "base", tiny_model_config, tiny_train_config.replace(max_steps=10))
    base = checkpoint.load(tmp_path / "base")
    essay = "What is a startup? A startup is a company designed to grow fast. 42% grow; 7 don't.\n" * 20
    result = fine_tune(essay, tmp_path / "tuned", tmp_path / "base", tiny_train_config.replace(max_steps=1, eval_interval=1, lr=1e-9, warmup_steps=0))
    tuned = checkpoint.load(result.run_dir / "last.pt")
    assert tuned.vocab.chars[: len(base.vocab)] == base.vocab.chars
    assert {"4", "2", "%", "7", "'"} <= set(tuned.vocab.chars[len(base.vocab):])
    n = len(base.vocab)
    torch.testing.assert_close(tuned.model.embed.weight[:n], base.model.embed.weight, rtol=0, atol=1e-6)
    assert tuned.meta["init_from"].endswith("best.pt")
    # With a moving average the average starts from the trained weights, not the random ones, and
    # the regularisation may change for the new corpus.
    averaged = fine_tune(essay, tmp_path / "averaged", tmp_path / "base",
                         tiny_train_config.replace(max_steps=1, eval_interval=1, lr=1e-9, ema=0.99), weight_drop=0.2)
    best = checkpoint.load(averaged.run_dir / "best.pt")
    assert best.model_config.weight_drop == 0.2
    torch.testing.assert_close(best.model.embed.weight[:n], base.model.embed.weight, rtol=0, atol=1e-6)


def test_each_evaluations_loss_plot_is_freed_at_once(tmp_path):
    # A figure is cyclic garbage: left to CPython's rare full collections, every evaluation's plot
    # stayed resident for a while and a long run's memory crept up. Automatic collection is off here,
    # so only the trainer's own clean-up after an evaluation can free it.
    import gc

    from matplotlib.figure import Figure

    from charrnn.plots import plot_losses
    from charrnn.runtime import release_free_memory

    history = {"step": [10, 20], "time": [1.0, 2.0], "train_loss": [3.0, 2.5], "val_loss": [3.1, 2.6]}
    plot_losses(history, tmp_path / "losses.png")  # the first figure also fills matplotlib's one-off caches
    release_free_memory()
    gc.disable()
    try:
        for _ in range(2):  # as at two evaluations
            plot_losses(history, tmp_path / "losses.png")
            release_free_memory()
        alive = sum(type(o) is Figure for o in gc.get_objects())  # type(): isinstance pokes lazy torch attributes
    finally:
        gc.enable()
    assert alive == 0
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1, max_steps=100, time_budget=None)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(0.1)


def test_loss_curve_stays_bounded_and_keeps_the_mean(tmp_path):
    # The loss plot of a long run is drawn from a bounded curve: memory and drawing time must not
    # grow with the run (the soak caught the trainer's memory growing with its metrics file).
    from charrnn.plots import LossCurve, plot_losses

    curve = LossCurve(max_points=100)
    losses = [3.0 - 2.0 * k / 10_007 + 0.1 * math.sin(k) for k in range(10_007)]
    for k, loss in enumerate(losses, start=1):
        curve.add(k, k / 10, loss)
    steps, times, means = curve.series()
    assert len(curve) <= 101 and curve.width == 128
    assert steps == sorted(steps) and times == sorted(times)
    counts = [b[3] for b in curve.buckets] + ([curve._open[3]] if curve._open[3] else [])
    assert sum(counts) == len(losses)  # every step counted once
    assert sum(m * n for m, n in zip(means, counts, strict=True)) == pytest.approx(sum(losses))
    assert means[0] == pytest.approx(2.99, abs=0.05) and means[-1] == pytest.approx(1.0, abs=0.05)

    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "w") as f:
        for k, loss in enumerate(losses[:500], start=1):
            f.write(json.dumps({"step": k, "loss": loss, "lr": 1e-3, "time": k / 10}) + "\n")
        f.write('{"step": 501, "lo')  # a line torn by a kill
    read = LossCurve.from_metrics(metrics, max_points=100)
    assert len(read) <= 101 and sum(b[3] for b in read.buckets) + read._open[3] == 500
    out = plot_losses({"step": [250, 500], "time": [25, 50], "val_loss": [2.5, 2.4], "train_loss": [2.6, 2.5]},
                      tmp_path / "losses.png", metrics=read)
    assert out.stat().st_size > 10_000


def test_the_training_loop_imports_neither_plotting_nor_sampling():
    # Metrics, plots and samples are listeners (train_listeners.py) that load what they need when
    # they first run: a trainer used with listeners=[] never pays for matplotlib or the sampler.
    import subprocess
    import sys

    code = ("import sys, charrnn.train; "
            "print(sorted(m for m in ('charrnn.plots', 'charrnn.sample', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

def _slow_validation(monkeypatch, seconds_per_column):
    """Validation deliberately expensive next to a step (as with a big validation split on a busy
    machine): each evaluation sleeps in proportion to the characters per stream it scores. Sleeping
    costs no CPU, so the test measures the trainer's arithmetic, not the machine's load."""
    import importlib

    training = importlib.import_module("charrnn.train")  # `charrnn.train` itself is the function
    real = training.evaluate

    def slow(model, streams, *args, **kwargs):
        time.sleep(seconds_per_column * (streams.shape[1] - 1))
        return real(model, streams, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", slow)


def test_the_time_budget_holds_when_validation_is_slow(tmp_path, tiny_text, tiny_model_config, tiny_train_config,
                                                       monkeypatch):
    # No evaluation is due before the clock runs out, so none has been timed when the run must decide
    # to stop: the cost of the final one is estimated up front (a slice of validation, scaled), else
    # the run overshoots by a whole validation pass. The same after a resume (a new process has
    # timed nothing either). 977 characters per stream at 2 ms: 2 s per evaluation, so a run that
    # does not reserve it ends 2 s late or later. The slack is for a busy machine's varying speed.
    _slow_validation(monkeypatch, 0.002)
    text = tiny_text * 20
    cfg = tiny_train_config.replace(max_steps=None, time_budget=8.0, eval_interval=10**6, val_frac=0.5)
    first = train(text, tmp_path / "run", tiny_model_config, cfg)
    assert first.stop_reason == "time_budget" and first.step > 0
    assert first.history["step"] == [first.step]  # only the final evaluation ran
    assert first.elapsed <= 8.0 + 1.5, first.elapsed
    more = resume(text, tmp_path / "run", time_budget=6.0)  # six more seconds
    assert more.stop_reason == "time_budget" and more.step > first.step
    assert more.elapsed - first.elapsed <= 6.0 + 1.5, (first.elapsed, more.elapsed)


def test_resuming_a_finished_run_with_a_new_limit_continues(tmp_path, tiny_text, tiny_model_config,
                                                            tiny_train_config):
    # The README's `--resume RUN --max-steps N` after a run that its time budget ended: the saved
    # clock is spent, and a new step limit replaces it; a new time budget is that much more time.
    cfg = tiny_train_config.replace(max_steps=None, time_budget=2.0, eval_interval=10**6)
    first = train(tiny_text, tmp_path / "run", tiny_model_config, cfg)
    assert first.stop_reason == "time_budget"
    with pytest.raises(CharRNNError, match=r"already reached (its|the end of its) time budget .* --max-steps N .* --time-budget T"):
        resume(tiny_text, tmp_path / "run")  # no new limit: nothing left to do, and it says how to go on
    by_steps = resume(tiny_text, tmp_path / "run", max_steps=first.step + 7)
    assert by_steps.stop_reason == "max_steps" and by_steps.step == first.step + 7
    assert checkpoint.load(tmp_path / "run" / "last.pt").meta["step"] == first.step + 7
    with pytest.raises(CharRNNError, match=r"already reached its step limit"):
        resume(tiny_text, tmp_path / "run", max_steps=first.step + 7)
    with pytest.raises(CharRNNError, match=r"too short to train a step and evaluate"):
        resume(tiny_text, tmp_path / "run", time_budget=0.01)
    by_time = resume(tiny_text, tmp_path / "run", time_budget=4.0)
    assert by_time.stop_reason == "time_budget" and by_time.step > by_steps.step
    assert by_time.elapsed == pytest.approx(by_steps.elapsed + 4.0, abs=1.5)
    meta = checkpoint.load(tmp_path / "run" / "last.pt").meta
    assert meta["train_config"]["max_steps"] is None
    assert [s["step"] for s in meta["starts"]] == [first.step, by_steps.step]  # where each session began


def test_a_run_that_ends_undertrained_says_so_and_what_to_do(tmp_path):
    from charrnn.advice import undertrained_note
    from charrnn.train import TrainResult

    def result(step, loss, reason="time_budget", elapsed=120.0, model=None):
        model = model or ModelConfig()
        history = {"step": [step], "val_loss": [loss]}
        return TrainResult(tmp_path, loss, step, step, elapsed, reason, history, TrainConfig(), model)

    early = undertrained_note(result(98, 2.6))  # the 98 steps a busy machine managed in 2 minutes
    assert "before the first scheduled evaluation (step 200)" in early
    assert "other programs were using it, or this CPU is slower" in early and "--time-budget" in early and "quieter machine" in early
    high = undertrained_note(result(641, 2.2))  # evaluated, but far above the quick preset's ~1.55
    assert "far above the ~1.55" in high and "quick" in high
    assert undertrained_note(result(2042, 1.5352)) is None  # the README's default run
    assert undertrained_note(result(641, 2.2, model=ModelConfig(hidden_size=100))) is None  # no reference
    assert undertrained_note(result(98, 2.6, reason="SIGINT")) is None  # stopped on purpose


def test_the_library_defaults_are_the_cli_default(tiny_text):
    # `train(text, dir)` and `charrnn train FILE` on a CPU train the same model the same way.
    from charrnn.commands.train import _configs

    model_config, train_config = _configs("auto", {}, {"device": "cpu"})
    assert model_config == ModelConfig(vocab_size=model_config.vocab_size)
    assert train_config == TrainConfig(device="cpu")


@pytest.mark.parametrize("field, value", [("lr", 1e39), ("lr", 1e300), ("lr", 2.0), ("weight_decay", 1e30),
                                          ("grad_clip", 1e300), ("max_steps", 10**20), ("warmup_steps", 10**20),
                                          ("decay_steps", 10**20), ("eval_interval", 10**20),
                                          ("time_budget", 1e300)])
def test_absurd_settings_are_refused_up_front(field, value):
    with pytest.raises(CharRNNError, match=field):
        TrainConfig(**{field: value})


def test_a_divergence_names_its_likely_cause(tmp_path, tiny_text, tiny_model_config, tiny_train_config):
    # A divergence under a heavy weight decay must point at it, not send the user lowering the lr.
    trainer = Trainer(tiny_text, tmp_path / "run", tiny_model_config, tiny_train_config.replace(weight_decay=0.5))
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("nan"))
    with pytest.raises(CharRNNError, match=r"loss became nan at step 1; --weight-decay 0.5 is far above the usual"):
        trainer.run()


def test_the_loss_plot_names_the_run_and_marks_where_sessions_began(tmp_path, monkeypatch):
    from charrnn import plots

    drawn = {}
    real = plots._atomic_savefig

    def capture(fig, path, fmt, **kwargs):
        drawn["title"] = fig._suptitle.get_text()
        drawn["labels"] = [t.get_text().strip() for ax in fig.axes for t in ax.texts]
        drawn["lines"] = [line.get_xdata()[0] for ax in fig.axes for line in ax.lines if line.get_linestyle() == "--"]
        drawn["math"] = [t.get_parse_math() for ax in fig.axes for t in ax.texts if "$" in t.get_text()]
        drawn["math"].append(fig._suptitle.get_parse_math())
        return real(fig, path, fmt, **kwargs)

    monkeypatch.setattr(plots, "_atomic_savefig", capture)
    history = {"step": [100, 200, 300], "time": [60.0, 120.0, 180.0], "train_loss": [2.5, 2.0, 1.8],
               "val_loss": [2.6, 2.1, 1.9]}
    starts = [(0, 0.0, "fine-tuned from $hakespeare_1"), (200, 120.0, "resumed")]
    plots.plot_losses(history, tmp_path / "losses.png", title="my_run $1", starts=starts)
    assert drawn["title"] == "my_run $1: training loss"
    assert drawn["labels"].count("resumed") == 2 and drawn["labels"].count("fine-tuned from $hakespeare_1") == 2
    assert sorted(drawn["lines"]) == [0, 0, 2.0, 200]  # steps on the left, minutes on the right
    assert not any(drawn["math"])  # drawn literally, never as mathtext
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_the_cli_summary_says_undertrained_and_a_new_step_limit_continues(tmp_path, text_file):
    # The path end to end: a time-budget run that never reached its first evaluation says so,
    # and `--resume RUN --max-steps N` then trains on instead of printing "done" at once.
    from click.testing import CliRunner

    from charrnn.cli import main

    tiny = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16",
            "--device", "cpu", "--sample-length", "0", "--precision", "fp32", "--eval-interval", "100000"]
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(main, ["train", str(text_file), "--out", str(run_dir), "--time-budget", "3s", *tiny],
                               catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "undertrained: the time budget ran out at step" in first.output
    assert "before the first scheduled evaluation (step 100000)" in first.output
    step = checkpoint.load(run_dir / "last.pt").meta["step"]
    more = CliRunner().invoke(main, ["train", str(text_file), "--resume", str(run_dir), "--max-steps", str(step + 5)],
                              catch_exceptions=False)
    assert more.exit_code == 0, more.output
    assert f"resuming at step {step}" in more.output and "done (max_steps)" in more.output
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == step + 5
