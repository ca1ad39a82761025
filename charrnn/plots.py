"""Figures from plain data (histories, sweep records); the only module that imports matplotlib."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


class LossCurve:
    """The per-step training loss, kept as at most `max_points` bucket means.

    Buckets start one step wide; whenever `max_points` of them are full, neighbours merge and the
    width doubles. Memory and drawing time stay bounded however long a run goes (a plot that
    re-read every logged step grew the trainer's memory with the run's length).
    """

    def __init__(self, max_points: int = 2000):
        if max_points < 2 or max_points % 2:
            raise ValueError(f"max_points must be an even number >= 2, got {max_points}")
        self.max_points = max_points
        self.width = 1  # steps per full bucket
        self.buckets: list[list[float]] = []  # full buckets: [sum of steps, of times, of losses, count]
        self._open: list[float] = [0.0, 0.0, 0.0, 0]

    def add(self, step: float, time: float, loss: float) -> None:
        bucket = self._open
        bucket[0] += step
        bucket[1] += time
        bucket[2] += loss
        bucket[3] += 1
        if bucket[3] >= self.width:
            self.buckets.append(bucket)
            self._open = [0.0, 0.0, 0.0, 0]
            if len(self.buckets) >= self.max_points:
                pairs = zip(self.buckets[::2], self.buckets[1::2], strict=True)
                self.buckets = [[a[i] + b[i] for i in range(4)] for a, b in pairs]
                self.width *= 2

    def __len__(self) -> int:
        return len(self.buckets) + (1 if self._open[3] else 0)

    def series(self) -> tuple[list[float], list[float], list[float]]:
        """Mean step, mean time and mean loss of each bucket, in order."""
        buckets = self.buckets + ([self._open] if self._open[3] else [])
        return ([b[0] / b[3] for b in buckets], [b[1] / b[3] for b in buckets], [b[2] / b[3] for b in buckets])

    @classmethod
    def from_metrics(cls, path: str | os.PathLike | None, max_points: int = 2000) -> LossCurve:
        """Read a run's metrics.jsonl line by line (torn or foreign lines are skipped)."""
        curve = cls(max_points)
        if path is None or not Path(path).exists():
            return curve
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    curve.add(float(row["step"]), float(row["time"]), float(row["loss"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        return curve


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def load_pyplot() -> None:
    """Import matplotlib now (seconds on a busy CPU), so that timing a plot afterwards times its drawing."""
    _pyplot()


def plot_losses(history: dict[str, list], out: str | os.PathLike | None,
                metrics: str | os.PathLike | LossCurve | None = None, *, title: str | None = None,
                starts: Sequence[tuple[float, float, str]] = ()) -> Path | None:
    """Train and validation loss against steps and against minutes, written atomically as PNG.

    `metrics` is the per-step training loss: a run's metrics.jsonl, or a `LossCurve` kept in memory.
    `title` names the run; `starts` are (step, seconds, label) where a session began (a resume, or
    the fine-tune a run started as), each drawn as a vertical line with its label. With `out` None
    the figure is drawn and encoded but not written (what the trainer times to budget for a plot).
    """
    plt = _pyplot()
    curve = metrics if isinstance(metrics, LossCurve) else LossCurve.from_metrics(metrics)
    steps, times, losses = curve.series()
    smoothed = _smooth(losses, max(1, math.ceil(50 / curve.width)))  # about 50 steps per point
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "time", "wall clock (minutes)")):
        scale = 1 / 60 if key == "time" else 1
        if losses:
            xs = [x * scale for x in (steps if key == "step" else times)]
            ax.plot(xs, smoothed, color="tab:blue", alpha=0.8, lw=1, label="train (per step, smoothed)")
        else:
            pts = [(x, y) for x, y in zip(history.get(key, []), history.get("train_loss", []), strict=False) if y is not None]
            if pts:
                ax.plot([p[0] * scale for p in pts], [p[1] for p in pts], "o-", color="tab:blue", label="train")
        val = [(x, y) for x, y in zip(history.get(key, []), history.get("val_loss", []), strict=False) if y is not None]
        if val:
            ax.plot([p[0] * scale for p in val], [p[1] for p in val], "o-", color="tab:orange", label="validation")
            best = min(val, key=lambda p: p[1])
            ax.annotate(f"best {best[1]:.3f} nats ({best[1] / math.log(2):.3f} bits)",
                        (best[0] * scale, best[1]), textcoords="offset points", xytext=(0, 12),
                        ha="right", fontsize=8)
        for step, seconds, text in starts:
            x = (step if key == "step" else seconds) * scale
            ax.axvline(x, color="tab:gray", ls="--", lw=1)
            # Run names and labels are drawn as written, never parsed as mathtext ($, _ and ^ are common).
            ax.text(x, 0.98, f" {text}", transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="left",
                    fontsize=7, color="tab:gray", parse_math=False)
        ax.set_xlabel(label)
        ax.set_ylabel("cross-entropy (nats/char)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing drawn yet (a plot timed before any step): no legend
            ax.legend(fontsize=8)
    fig.suptitle(f"{title}: training loss" if title else "charrnn training loss", parse_math=False)
    try:
        if out is None:
            import io

            fig.savefig(io.BytesIO(), format="png", dpi=100)
            return None
        out = Path(out)
        _atomic_savefig(fig, out, "png", dpi=100)
    finally:
        plt.close(fig)
    return out


def _atomic_savefig(fig: Any, path: Path, fmt: str, **kwargs: Any) -> None:
    """Through a temporary file and a rename, like every file charrnn writes: an interrupted or
    failed write leaves the previous figure, and no temporary file behind."""
    from .checkpoint import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


# ----------------------------------------------------------------------------------------------
# Temperature sweep figures (data: the `summary` rows of charrnn.sweep, plain dicts)

def _save_png_svg(fig: Any, out: str | os.PathLike, dpi: int = 100) -> tuple[Path, Path]:
    """Write `fig` as <out>.png and <out>.svg, each through a temporary file and a rename."""
    plt = _pyplot()
    base = Path(out)
    base = base.with_suffix("") if base.suffix in (".png", ".svg") else base
    written = []
    try:
        for ext in ("png", "svg"):
            path = base.with_name(f"{base.name}.{ext}")
            _atomic_savefig(fig, path, ext, dpi=dpi, metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
    finally:
        plt.close(fig)
    return written[0], written[1]


def _sweep_axis(ax: Any, summary: list[dict[str, Any]], key: str, *, color: str = "tab:blue",
                label: str | None = None, percent: bool = False) -> None:
    """One metric against temperature: mean line, min-max band, greedy as a star at T=0."""
    scale = 100.0 if percent else 1.0
    sampled = [r for r in summary if not r["greedy"]]
    if sampled:
        xs = [r["temperature"] for r in sampled]
        stats = [r["metrics"][key] for r in sampled]
        ax.fill_between(xs, [s["min"] * scale for s in stats], [s["max"] * scale for s in stats],
                        color=color, alpha=0.18, lw=0)
        ax.plot(xs, [s["mean"] * scale for s in stats], "o-", color=color, ms=3.5, lw=1.5, label=label)
    for r in summary:
        if r["greedy"]:  # a star in the series' colour, so stacked greedy points stay attributable
            # With no line to carry the label (a greedy-only sweep), the star names the series in the legend.
            ax.plot([0.0], [r["metrics"][key]["mean"] * scale], "*", color=color, mec="black", mew=0.6, ms=11,
                    zorder=5, label=None if sampled else label)
    ax.set_xlim(left=-0.05)
    ax.grid(alpha=0.3)


def plot_sweep(summary: list[dict[str, Any]], out: str | os.PathLike, *, metrics: list[dict[str, Any]],
               title: str = "Temperature sweep", subtitle: str = "") -> tuple[Path, Path]:
    """Each sweep metric against temperature with its spread, on one figure (PNG and SVG)."""
    plt = _pyplot()
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), constrained_layout=True, squeeze=False)
    for ax, info in zip(axes.flat, metrics, strict=False):
        percent = info["unit"].startswith("share")
        _sweep_axis(ax, summary, info["key"], percent=percent)
        ax.set_title(info["title"], fontsize=9.5)
        ax.set_xlabel("softmax temperature T (greedy at T=0)", fontsize=8)
        ax.set_ylabel(f"{info['unit']}{' (%)' if percent else ''}", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color="tab:blue", marker="o", ms=3.5, label="mean over samples"),
               plt.matplotlib.patches.Patch(color="tab:blue", alpha=0.18, label="min to max"),
               plt.Line2D([], [], color="tab:blue", mec="black", mew=0.6, marker="*", ls="", ms=11,
                          label="greedy (argmax), at T=0")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    return _save_png_svg(fig, out)


def _wrap_excerpt(text: str, width: int, max_lines: int) -> str:
    import textwrap

    lines: list[str] = []
    for line in text.replace("\t", " ").split("\n"):
        lines.extend(textwrap.wrap(line, width, drop_whitespace=False, replace_whitespace=False) or [""])
    lines = lines[-max_lines:]
    return "\n".join(lines)


def plot_spectrum(summary: list[dict[str, Any]], excerpts: dict[str, str], out: str | os.PathLike, *,
                  title: str = "From repetitive to chaotic", subtitle: str = "") -> tuple[Path, Path]:
    """The spectrum: repetition and invention against temperature beside sample excerpts (PNG and SVG)."""
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 7.2), constrained_layout=True)
    # The two plots and the excerpts get grids of their own: slicing one shared grid by the number of
    # excerpts leaves no row for the second plot when a sweep has a single setting.
    grid = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.35])
    plots_grid = grid[0, 0].subgridspec(2, 1)
    text_grid = grid[0, 1].subgridspec(max(1, len(excerpts)), 1)
    rep = fig.add_subplot(plots_grid[0, 0])
    inv = fig.add_subplot(plots_grid[1, 0], sharex=rep)
    _sweep_axis(rep, summary, "repeated_ngram_share", color="tab:blue", label="repeated 8-grams", percent=True)
    _sweep_axis(rep, summary, "copied_ngram_share", color="tab:green", label="10-grams copied from training text",
                percent=True)
    rep.set_title("Repetition and copying fall as T rises", fontsize=10)
    rep.set_ylabel("share of the sample's n-grams (%)", fontsize=8.5)
    rep.legend(fontsize=7.5, loc="upper right")
    _sweep_axis(inv, summary, "invented_word_share", color="tab:orange", label="invented words", percent=True)
    inv.set_title("Invented words rise as T rises", fontsize=10)
    inv.set_ylabel("words not in the training text (%)", fontsize=8.5)
    inv.set_xlabel("softmax temperature T (greedy plotted at T=0)", fontsize=8.5)
    inv.legend(fontsize=7.5, loc="upper left")
    by_setting = {r["setting"]: r for r in summary}
    for i, (setting, text) in enumerate(excerpts.items()):
        ax = fig.add_subplot(text_grid[i, 0])
        ax.set_axis_off()
        row = by_setting.get(setting)
        facts = ""
        if row is not None:
            m = row["metrics"]
            loop = row["loop_periods"][0] if row["loop_periods"] else 0
            facts = (f"   invented {m['invented_word_share']['mean']:.0%}, repeated 8-grams "
                     f"{m['repeated_ngram_share']['mean']:.0%}" + (f", loops with period {loop}" if loop else ""))
        ax.set_title(f"{setting}{facts}", loc="left", fontsize=9, fontweight="bold")
        ax.text(0.0, 1.0, _wrap_excerpt(text, 90, 8), family="monospace", fontsize=7.6, va="top", ha="left",
                transform=ax.transAxes,
                bbox={"boxstyle": "round,pad=0.5", "facecolor": "#f6f6f2", "edgecolor": "#cccccc"})
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    return _save_png_svg(fig, out)
