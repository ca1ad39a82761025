"""A sweep's results on disk and on a terminal: samples, metrics (CSV, JSON), plots, report, summary.

sweep.py computes a sweep (`run`) and drives one from a checkpoint (`sweep`); this module only
writes what it found. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import CharRNNError
from .sweep import METRIC_KEYS, METRICS, MIN_TREND_TEMPERATURES, SweepResult, too_few_temperatures


def excerpt(text: str, chars: int = 360) -> str:
    """The last `chars` characters of a sample, starting at a line or word boundary where one is near."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    cut = tail.find("\n")
    if not 0 <= cut < chars // 4:
        cut = tail.find(" ")
    return tail[cut + 1:] if 0 <= cut < chars // 4 else tail


def spectrum_picks(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The settings the spectrum figure shows: greedy (or the lowest T), T nearest 0.5, nearest 1, the highest."""
    sampled = [row for row in summary if not row["greedy"]]
    picks = [row["setting"] for row in summary if row["greedy"]] or ([sampled[0]["setting"]] if sampled else [])
    for target in (0.5, 1.0):
        if sampled:
            picks.append(min(sampled, key=lambda r: abs(r["temperature"] - target))["setting"])
    if sampled:
        picks.append(sampled[-1]["setting"])
    return list(dict.fromkeys(picks))


def sample_file_name(setting: str) -> str:
    """samples/greedy.txt, samples/T0.5.txt, ..."""
    return f"{setting.replace('=', '')}.txt"


def write(result: SweepResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write samples (text and JSONL), metrics (CSV and JSON), plots (PNG, SVG) and the report."""
    from . import plots

    out = Path(out_dir)
    try:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharRNNError(f"cannot create {out}: {exc.strerror or exc}") from None
    files: dict[str, Path] = {}
    for name in result.config.settings:
        chunks = [f"=== {s['setting']} sample {s['index']} (seed {s['seed']}) ===\n{result.config.prime}{s['text']}\n"
                  for s in result.samples if s["setting"] == name]
        path = out / "samples" / sample_file_name(name)
        _write_text(path, "\n".join(chunks))
    files["samples"] = out / "samples.jsonl"
    _write_text(files["samples"], "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in result.samples))
    files["metrics_csv"] = out / "metrics.csv"
    _write_text(files["metrics_csv"], _rows_csv(result.rows))
    files["summary_csv"] = out / "summary.csv"
    _write_text(files["summary_csv"], _summary_csv(result.summary))
    files["metrics_json"] = out / "metrics.json"
    write_json(files["metrics_json"], result.to_dict())
    loss = result.source.get("best_val_loss")
    title = (f"{result.source.get('corpus_name', 'corpus')}: {result.source.get('model', 'model')}"
             + (f" (validation loss {loss:.3f} nats/char)" if isinstance(loss, (int, float)) else ""))
    subtitle = (f"{result.config.num_samples} samples x {result.config.length} chars per temperature, seed "
                f"{result.config.seed}; line = mean, band = min to max")
    infos = [asdict(m) for m in METRICS]
    files["sweep_png"], files["sweep_svg"] = plots.plot_sweep(result.summary, out / "sweep", metrics=infos,
                                                              title=f"Temperature sweep - {title}", subtitle=subtitle)
    excerpts = {name: excerpt(_first_text(result, name)) for name in spectrum_picks(result.summary)}
    files["spectrum_png"], files["spectrum_svg"] = plots.plot_spectrum(
        result.summary, excerpts, out / "spectrum", title=f"Temperature spectrum - {title}", subtitle=subtitle)
    files.update(write_report(result, out))
    return files


def write_report(result: SweepResult, out: Path) -> dict[str, Path]:
    from . import report

    data = result.to_dict()
    texts = {name: [s["text"] for s in result.samples if s["setting"] == name] for name in result.config.settings}
    files = {"report_md": out / "report.md", "report_html": out / "report.html"}
    _write_text(files["report_md"], report.render_markdown(data, texts))
    _write_text(files["report_html"], report.render_html(data, texts, images={
        "spectrum": (out / "spectrum.png").read_bytes(), "sweep": (out / "sweep.png").read_bytes()}))
    return files


def _first_text(result: SweepResult, setting: str) -> str:
    return next(s["text"] for s in result.samples if s["setting"] == setting)


_ROW_FIELDS = ("setting", "temperature", "index", "seed", "chars", "words", *METRIC_KEYS, "loop_period", "loop_start",
               "longest_copy_text")


def _rows_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in _ROW_FIELDS})
    return buffer.getvalue()


def _summary_csv(summary: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    stats = ("mean", "std", "min", "max")
    fields = ["setting", "temperature", "num_samples", "loop_periods", *(f"{k}_{s}" for k in METRIC_KEYS for s in stats)]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in summary:
        flat = {"setting": row["setting"], "temperature": row["temperature"], "num_samples": row["num_samples"],
                "loop_periods": " ".join(map(str, row["loop_periods"]))}
        for key in METRIC_KEYS:
            for s in stats:
                flat[f"{key}_{s}"] = row["metrics"][key][s]
        writer.writerow(flat)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(_json_safe(data), ensure_ascii=False, indent=1) + "\n")


def _write_text(path: Path, text: str) -> None:
    from .atomic import atomic_write

    try:
        atomic_write(path, lambda f: f.write(text), mode="w")
    except OSError as exc:
        raise CharRNNError(f"cannot write {path}: {exc.strerror or exc}") from None


def format_summary(result: SweepResult) -> str:
    """A plain-text table of the per-temperature means and the spectrum checks, for a terminal."""
    columns = (("repeated_ngram_share", "repeat"), ("compression_ratio", "zlib"), ("loop", "loops"),
               ("invented_word_share", "invented"), ("copied_ngram_share", "copied"),
               ("longest_copy", "longest"), ("entropy", "entropy"), ("nll", "nll"))
    lines = [f"{'setting':<9}" + "".join(f"{name:>9}" for _, name in columns)]
    for row in result.summary:
        cells = "".join(f"{row['metrics'][key]['mean']:>9.3f}" if key != "longest_copy"
                        else f"{row['metrics'][key]['mean']:>9.0f}" for key, _ in columns)
        lines.append(f"{row['setting']:<9}{cells}")
    rhos = result.correlations
    sampled = sum(1 for row in result.summary if not row["greedy"])
    if sampled < MIN_TREND_TEMPERATURES:
        lines.append(f"Spearman rho vs temperature: {too_few_temperatures(sampled)}")
    else:
        lines.append(f"Spearman rho vs temperature: repetition {rhos['repeated_ngram_share']:+.3f}, "
                     f"zlib {rhos['compression_ratio']:+.3f}, invented {rhos['invented_word_share']:+.3f}, "
                     f"copied {rhos['copied_ngram_share']:+.3f}, entropy {rhos['entropy']:+.3f}")
    for c in result.checks:
        lines.append(f"[{'pass' if c.passed else 'FAIL'}] {c.name} ({c.requirement}): {c.detail}")
    return "\n".join(lines)
