"""What `charrnn train` shows while it runs: a live bar on a terminal, few plain lines in a log."""

from __future__ import annotations

from charrnn.progress import TrainProgress

STEP = {"event": "step", "step": 120, "epoch": 0.5, "train_loss": 2.25, "best_val_loss": None,
        "chars_per_sec": 31_000.0, "elapsed": 65.0, "time_left": 55.0, "done_frac": 0.54}
EVAL = {"event": "eval", "step": 200, "val_loss": 1.9434, "val_bits": 2.804, "improved": True,
        "sample": "ROMEO:\nBut soft"}


def test_a_log_file_gets_one_progress_line_per_interval_and_every_evaluation(capsys):
    progress = TrainProgress(quiet=False, tty=False)
    for step in range(120, 130):
        progress({**STEP, "step": step})
    progress(EVAL)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err  # a redirected log holds lines, not redraws
    assert sum("chars/s" in line for line in lines) == 1  # throttled: ten steps inside 10 s print once
    assert lines[0] == "[###########.........] step    120 | epoch 0.50 | train 2.250 | best val - | 31.0k chars/s | 1m05s elapsed, 55s left"
    assert "step    200 | val 1.9434 nats/char (2.804 bits) (best, saved)" in lines
    assert "  | ROMEO:" in lines and "  | But soft" in lines


def test_a_terminal_gets_a_live_bar_with_evaluations_printed_above_it(capsys):
    progress = TrainProgress(quiet=False, tty=True)
    progress(STEP)
    progress({**STEP, "step": 121, "done_frac": 0.6})
    progress(EVAL)
    progress({"event": "end"})
    err = capsys.readouterr().err
    assert "\r" in err  # redrawn in place
    assert "step    121 | epoch 0.50" in err and "1m05s elapsed, 55s left" in err
    assert "step    200 | val 1.9434 nats/char (2.804 bits) (best, saved)" in err
    assert progress.bar is None  # closed at the end of the run


def test_quiet_still_answers_a_ctrl_c(capsys):
    progress = TrainProgress(quiet=True, tty=False)
    progress(STEP)
    progress({"event": "stopping", "signal": "SIGINT", "step": 7})
    err = capsys.readouterr().err
    assert "chars/s" not in err
    assert err.startswith("SIGINT at step 7: evaluating and saving")
