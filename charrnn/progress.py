"""How `charrnn train` shows a run's events on stderr: a live tqdm bar on a terminal, throttled
plain lines in a log file or pipe (a redirected log gets no carriage-return redraws)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 86400:  # a long run's ETA in days, not a million minutes
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _threads_note(event: dict[str, Any]) -> str:
    if event.get("device") != "cpu" or "threads" not in event:
        return ""
    plural = "s" if event["threads"] != 1 else ""
    return f", {event['threads']} thread{plural}" + (" for now, re-checked as it runs" if event["threads_auto"] else "")


def start_line(event: dict[str, Any]) -> str:
    m, t = event["model_config"], event["train_config"]
    budget = f", time budget {fmt_time(t['time_budget'])}" if t["time_budget"] else ""
    steps = f", max {t['max_steps']} steps" if t["max_steps"] else ""
    resumed = (f", resuming at step {event['resumed_at']} ({fmt_time(event.get('elapsed'))} used)"
               if event.get("resumed", event["resumed_at"]) else "")
    procs = f" x {event['world_size']} processes" if event.get("world_size", 1) > 1 else ""
    regularised = "".join(f", {label} {value:g}" for label, value in (
        ("dropout", m.get("dropout", 0)), ("weight drop", m.get("weight_drop", 0)), ("EMA", t.get("ema", 0)))
        if value)
    return (f"{m['num_layers']}x{m['hidden_size']} {m['model'].upper()} "
            f"({event['params'] / 1e6:.2f}M params, vocab {event['vocab_size']}{regularised}) on "
            f"{event['device']}{procs} ({event['precision']}{_threads_note(event)}), batch {t['batch_size']} x seq {t['seq_len']}, "
            f"lr {t['lr']:g}{budget}{steps}{resumed} -> {event['run_dir']}")


def step_line(event: dict[str, Any]) -> str:
    val = f"{event['best_val_loss']:.3f}" if event["best_val_loss"] is not None else "-"
    return (f"step {event['step']:>6} | epoch {event['epoch']:.2f} | train {event['train_loss']:.3f} | "
            f"best val {val} | {event['chars_per_sec'] / 1000:.1f}k chars/s | "
            f"{fmt_time(event['elapsed'])} elapsed, {fmt_time(event['time_left'])} left")


class TrainProgress:
    """A `log` callback for the trainer that prints its events for a person."""

    LOG_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal

    def __init__(self, quiet: bool, tty: bool | None = None):
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.last_print = 0.0
        self.bar: Any = None

    def _echo(self, text: str) -> None:
        """A line above the live bar (tqdm moves the bar down), or a plain line."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def _show_step(self, event: dict[str, Any]) -> None:
        if not self.tty:
            now = time.monotonic()
            if now - self.last_print >= self.LOG_EVERY:
                self.last_print = now
                filled = int(round(20 * event.get("done_frac", 0.0)))
                click.echo("[" + "#" * filled + "." * (20 - filled) + "] " + step_line(event), err=True)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, file=sys.stderr, bar_format="{bar:20}| {desc}", dynamic_ncols=True,
                            leave=True, mininterval=0.2)
        self.bar.set_description_str(step_line(event), refresh=False)
        self.bar.update(int(round(1000 * event.get("done_frac", 0.0))) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "warning":
            self._echo(f"warning: {event['message']}")
        elif kind == "stopping":  # the answer to a Ctrl-C, quiet or not: the final evaluation can take a while
            self._echo(f"{event['signal']} at step {event['step']}: evaluating and saving a resumable checkpoint "
                       "(Ctrl-C again stops at once and keeps the last save)")
        if self.quiet:
            return
        if kind == "start":
            self._echo(start_line(event))
        elif kind == "corpus":  # preparing the memory-mapped id file (corpus_cache)
            self._echo(event["message"])
        elif kind == "step":
            self._show_step(event)
        elif kind == "sample":
            self._echo(f"sample at step {event['step']}:\n  | " + event["sample"].replace("\n", "\n  | "))
        elif kind == "eval":
            mark = " (best, saved)" if event["improved"] else ""
            self._echo(f"step {event['step']:>6} | val {event['val_loss']:.4f} nats/char "
                       f"({event['val_bits']:.3f} bits){mark}")
            if event.get("sample"):
                self._echo("  | " + event["sample"].replace("\n", "\n  | "))
        elif kind == "end":
            self.close()
