"""Training evolution: what a run wrote at each evaluation -- step, losses, and the sample it drew --
as a timeline (the blog's "iteration 100 ... 2000" view).

The losses come from the run's meta.json history (every run has it). The trainer prints a sample at
each evaluation; `SampleFile`, one of the default training listeners, keeps each in `samples.jsonl`
in the run folder. Runs trained before it existed show their losses without samples.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .train_listeners import TrainListener

SAMPLES_FILE = "samples.jsonl"
MAX_SAMPLE_CHARS = 100_000  # what one recorded sample may hold (the trainer's own limit)


class SampleFile(TrainListener):
    """samples.jsonl: the sample drawn at each evaluation, with its step and validation loss (one JSON
    line each). Listed after `train_listeners.Samples`, which puts the sample on the evaluation event."""

    def __init__(self, path: str | os.PathLike, *, fresh: bool):
        self.path = Path(path)
        self.fresh = fresh  # a new run replaces the samples of any run that was in its folder

    def on_resume(self, trainer: Any) -> None:
        """Drop samples recorded after the checkpoint we resume from, as metrics.jsonl does."""
        self.fresh = False
        if self.path.exists():
            kept = [line for line in _lines(self.path) if _step_of(line) is not None and _step_of(line) <= trainer.step]
            atomic_write(self.path, lambda f: f.writelines(kept), mode="w")

    def on_start(self, trainer: Any) -> None:
        if self.fresh and self.path.exists():
            self.path.unlink()
        self.fresh = False

    def on_eval(self, trainer: Any, event: dict[str, Any]) -> None:
        if not isinstance(event.get("sample"), str):
            return
        row = {"step": event.get("step"), "val_loss": event.get("val_loss"), "sample": event["sample"]}
        try:
            with open(self.path, "a", encoding="utf-8") as f:  # one line per write: a torn tail is skipped on reading
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as exc:  # the record is a convenience; training goes on
            trainer.log({"event": "warning", "message": f"could not record the sample in {self.path}: {exc}"})


def _lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line if line.endswith("\n") else line + "\n" for line in f]


def _step_of(line: str) -> int | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None


@dataclass
class TimelineEntry:
    step: int
    val_loss: float | None
    train_loss: float | None
    seconds: float | None
    sample: str | None


def read_samples(run_dir: str | os.PathLike) -> dict[int, str]:
    """step -> sample from samples.jsonl (the last one recorded for a step wins; foreign lines are skipped)."""
    path = Path(run_dir) / SAMPLES_FILE
    samples: dict[int, str] = {}
    if not path.is_file():
        return samples
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("sample"), str):
                samples[row["step"]] = row["sample"][:MAX_SAMPLE_CHARS]
    return samples


def timeline(run_dir: str | os.PathLike, meta: dict[str, Any] | None = None) -> list[TimelineEntry]:
    """The run's evaluations in order, each with the sample drawn there if one was recorded.

    `meta` defaults to the run folder's meta.json (the full history); a checkpoint's own metadata
    works too (its history ends where it was saved)."""
    run_dir = Path(run_dir)
    if meta is None:
        try:
            meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
    history = meta.get("history") if isinstance(meta, dict) else None
    history = history if isinstance(history, dict) else {}
    samples = read_samples(run_dir)

    def column(name: str) -> list[Any]:
        values = history.get(name)
        return values if isinstance(values, list) else []

    steps, val, train, times = column("step"), column("val_loss"), column("train_loss"), column("time")
    def pick(values: list[Any], i: int) -> float | None:
        return values[i] if i < len(values) and isinstance(values[i], (int, float)) else None

    entries = []
    for i, step in enumerate(steps):
        if isinstance(step, int):
            entries.append(TimelineEntry(step, pick(val, i), pick(train, i), pick(times, i), samples.pop(step, None)))
    entries += [TimelineEntry(step, None, None, None, text) for step, text in samples.items()]  # between evaluations
    return sorted(entries, key=lambda e: e.step)


def timeline_markdown(entries: list[TimelineEntry], sample_chars: int = 300) -> str:
    """The timeline as Markdown: a table of losses, then each recorded sample under its step."""
    if not entries:
        return "No evaluations recorded.\n"
    def fmt(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    lines = ["| step | validation loss (nats/char) | training loss | minutes |", "|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e.step} | {fmt(e.val_loss, '.4f')} | {fmt(e.train_loss, '.4f')} | "
                     f"{fmt(None if e.seconds is None else e.seconds / 60, '.1f')} |")
    for e in entries:
        if e.sample:
            loss = f", validation loss {e.val_loss:.4f}" if e.val_loss is not None else ""
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", e.sample)), default=0) + 1)
            lines += ["", f"**step {e.step}**{loss}", "", f"{fence}text", e.sample[:sample_chars], fence]
    return "\n".join(lines) + "\n"
