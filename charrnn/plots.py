"""Figures from plain data (histories, sweep records); the only module that imports matplotlib."""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
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
    from .atomic import atomic_write

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
        with missing_glyphs_drawn_as_boxes():
            for ext in ("png", "svg"):
                path = base.with_name(f"{base.name}.{ext}")
                _atomic_savefig(fig, path, ext, dpi=dpi, metadata={"Date": None} if ext == "svg" else None)
                written.append(path)
    finally:
        plt.close(fig)
    return written[0], written[1]


# Text a model or a user wrote (samples, corpus and run names, paths) is drawn as it is: matplotlib would
# otherwise read "$...$" as mathtext, and a lone "$" or a "\\" as a mathtext error that ends the figure.
LITERAL: dict[str, Any] = {"parse_math": False}


@contextlib.contextmanager
def missing_glyphs_drawn_as_boxes() -> Iterator[None]:
    """Characters the font lacks (CJK, emoji, control characters in a sample) are drawn as empty boxes;
    matplotlib says so with a UserWarning per glyph, which is noise on a terminal and an error under
    `-W error`. Only that warning is silenced, and only while drawing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield


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
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11, **LITERAL)
    return _save_png_svg(fig, out)


EXCERPT_COLUMNS = 90  # characters per line of a sample excerpt in the spectrum figure
EXCERPT_LINES = 8  # its last lines shown


def _wrap_excerpt(text: str, width: int, max_lines: int) -> str:
    import textwrap

    lines: list[str] = []
    for line in text.replace("\t", " ").split("\n"):
        lines.extend(textwrap.wrap(line, width, drop_whitespace=False, replace_whitespace=False) or [""])
    lines = lines[-max_lines:]
    return "\n".join(lines)


def plot_spectrum(summary: list[dict[str, Any]], excerpts: dict[str, str], out: str | os.PathLike, *,
                  title: str = "Samples across temperatures", subtitle: str = "") -> tuple[Path, Path]:
    """The spectrum: repetition and invention against temperature beside sample excerpts (PNG and SVG).

    Every text is drawn literally (see `LITERAL`). The panel titles name what is plotted and claim no
    trend, so they stay true whatever a model does (a weak model copies more at T=0.4 than at 0.1).
    """
    plt = _pyplot()
    wrapped = {setting: _wrap_excerpt(text, EXCERPT_COLUMNS, EXCERPT_LINES) for setting, text in excerpts.items()}
    # The excerpt column is as wide as EXCERPT_COLUMNS monospace characters, and each excerpt's row as
    # tall as its lines (plus its heading): evenly sized rows and a wider column left a quarter of the
    # figure empty. A row's height in text lines: the excerpt's lines, and about 3 for heading and box.
    rows = [text.count("\n") + 1 + 3 for text in wrapped.values()] or [1]
    height = min(max(6.4, 0.75 + 0.135 * sum(rows)), 10.0)
    fig = plt.figure(figsize=(12.2, height), constrained_layout=True)
    # The two plots and the excerpts get grids of their own: slicing one shared grid by the number of
    # excerpts leaves no row for the second plot when a sweep has a single setting.
    grid = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.28])
    plots_grid = grid[0, 0].subgridspec(2, 1)
    text_grid = grid[0, 1].subgridspec(len(rows), 1, height_ratios=rows)
    rep = fig.add_subplot(plots_grid[0, 0])
    inv = fig.add_subplot(plots_grid[1, 0], sharex=rep)
    _sweep_axis(rep, summary, "repeated_ngram_share", color="tab:blue", label="repeated 8-grams", percent=True)
    _sweep_axis(rep, summary, "copied_ngram_share", color="tab:green", label="10-grams copied from training text",
                percent=True)
    rep.set_title("Repetition and copying against temperature", fontsize=10)
    rep.set_ylabel("share of the sample's n-grams (%)", fontsize=8.5)
    rep.legend(fontsize=7.5, loc="upper right")
    _sweep_axis(inv, summary, "invented_word_share", color="tab:orange", label="invented words", percent=True)
    inv.set_title("Invented words against temperature", fontsize=10)
    inv.set_ylabel("words not in the training text (%)", fontsize=8.5)
    inv.set_xlabel("softmax temperature T (greedy plotted at T=0)", fontsize=8.5)
    inv.legend(fontsize=7.5, loc="upper left")
    by_setting = {r["setting"]: r for r in summary}
    for i, (setting, text) in enumerate(wrapped.items()):
        ax = fig.add_subplot(text_grid[i, 0])
        ax.set_axis_off()
        row = by_setting.get(setting)
        facts = ""
        if row is not None:
            m = row["metrics"]
            loop = row["loop_periods"][0] if row["loop_periods"] else 0
            facts = (f"   invented {m['invented_word_share']['mean']:.0%}, repeated 8-grams "
                     f"{m['repeated_ngram_share']['mean']:.0%}" + (f", loops with period {loop}" if loop else ""))
        ax.set_title(f"{setting}{facts}", loc="left", fontsize=9, fontweight="bold", **LITERAL)
        ax.text(0.0, 1.0, text, family="monospace", fontsize=7.6, va="top", ha="left", transform=ax.transAxes,
                **LITERAL,
                bbox={"boxstyle": "round,pad=0.5", "facecolor": "#f6f6f2", "edgecolor": "#cccccc"})
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11, **LITERAL)
    return _save_png_svg(fig, out)


# ----------------------------------------------------------------------------------------------
# `charrnn explain` figures (data: plain arrays from charrnn.explain)

_GATE_COLOURS = {"i": "tab:blue", "f": "tab:green", "o": "tab:red", "r": "tab:purple", "z": "tab:orange"}
_GATE_LABELS = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate", "z": "update gate"}


def plot_gate_saturation(gates: list[dict[str, Any]], out: str | os.PathLike, *, title: str = "Gate saturation",
                         subtitle: str = "") -> tuple[Path, Path]:
    """The paper's scatter (Karpathy, Johnson & Fei-Fei 2015, fig. 3): one point per gate unit, the
    fraction of steps it is left-saturated (< 0.1) against right-saturated (> 0.9), one panel per
    layer. `gates` rows: {"layer", "gate", "left": [...], "right": [...]} (PNG and SVG)."""
    plt = _pyplot()
    layers = sorted({g["layer"] for g in gates}) or [1]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers) + 0.6, 3.9), constrained_layout=True,
                             squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=True):
        for g in (g for g in gates if g["layer"] == layer):
            ax.scatter(g["left"], g["right"], s=9, alpha=0.6, color=_GATE_COLOURS.get(g["gate"], "gray"),
                       label=_GATE_LABELS.get(g["gate"], g["gate"]), edgecolors="none")
        ax.plot([0, 1], [1, 0], color="#bbbbbb", lw=0.8, ls="--")  # left + right = 1: always saturated
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xlabel("fraction of steps < 0.1 (left-saturated)", fontsize=8)
        ax.set_ylabel("fraction of steps > 0.9 (right-saturated)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if gates:
        axes.flat[0].legend(fontsize=7.5, loc="upper right", markerscale=1.5)
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    return _save_png_svg(fig, out)


def plot_temperature_lens(rows: list[tuple[str, list[float]]], chars: list[str], out: str | os.PathLike, *,
                          actual: str | None = None, title: str = "Temperature lens",
                          subtitle: str = "", top: int = 12) -> tuple[Path, Path]:
    """One panel per decoding setting: the probability of the `top` most likely characters (most
    likely under any setting, the same order in every panel), the character that came in red."""
    import numpy as np

    plt = _pyplot()
    probs = np.array([p for _, p in rows], dtype=float)
    order = np.argsort(-probs.max(axis=0), kind="stable")[:top]
    shown = ["\u21b5" if chars[i] == "\n" else "\u2423" if chars[i] == " " else chars[i] for i in order]
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows) + 0.6, 3.3), sharey=True, constrained_layout=True,
                             squeeze=False)
    for ax, (label, p) in zip(axes.flat, rows, strict=True):
        values = np.asarray(p, dtype=float)[order]
        colours = ["tab:red" if actual is not None and chars[i] == actual else "tab:blue" for i in order]
        ax.bar(range(len(order)), values, color=colours)
        ax.set_xticks(range(len(order)), shown, fontsize=8, family="monospace")
        ax.set_title(label, fontsize=9.5)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        kept = int((np.asarray(p) > 0).sum())
        ax.text(0.98, 0.97, f"{kept} chars > 0", transform=ax.transAxes, ha="right", va="top", fontsize=7.5)
    axes.flat[0].set_ylabel("probability of the next character", fontsize=8.5)
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    return _save_png_svg(fig, out)


def _excerpt_grid(text: str, values: list[float], width: int, max_lines: int) -> list[list[tuple[str, float]]]:
    """Characters laid out in lines of `width` (a newline shows as ↵ and ends its line)."""
    lines: list[list[tuple[str, float]]] = [[]]
    for char, value in zip(text, values, strict=True):
        if len(lines[-1]) >= width:
            lines.append([])
        lines[-1].append(("\u21b5" if char == "\n" else "\u00b7" if char == "\t" else char, value))
        if char == "\n":
            lines.append([])
    return [line for line in lines if line][:max_lines]


def plot_cell_excerpts(rows: list[dict[str, Any]], out: str | os.PathLike, *, title: str = "Cells the finder found",
                       subtitle: str = "", width: int = 80, max_lines: int = 5) -> tuple[Path, Path]:
    """The blog's neuron pictures: each excerpt's characters on the cell's colour (red +1, blue -1).
    `rows`: {"title", "text", "values"} with one value in [-1, 1] per character (PNG and SVG)."""
    import numpy as np

    plt = _pyplot()
    grids = [_excerpt_grid(r["text"], list(r["values"]), width, max_lines) for r in rows]
    heights = [max(1, len(g)) + 1.4 for g in grids]
    fig = plt.figure(figsize=(width * 0.09 + 0.3, 0.19 * sum(heights) + 0.8))
    top = 1.0 - 0.55 / fig.get_figheight()
    unit = (top - 0.02) / max(sum(heights), 1)
    y = top
    cmap = plt.get_cmap("RdBu_r")
    for r, grid, h in zip(rows, grids, heights, strict=True):
        ax = fig.add_axes((0.01, y - h * unit, 0.98, h * unit))
        y -= h * unit
        ax.set_xlim(0, width)
        ax.set_ylim(h - 1.4 + 0.2, -1.2)
        ax.set_axis_off()
        ax.text(0, -0.65, r["title"], fontsize=8.5, fontweight="bold", va="center")
        colours = np.ones((max(1, len(grid)), width, 4))
        for row, line in enumerate(grid):
            for col, (_, value) in enumerate(line):
                colours[row, col] = cmap(0.5 + 0.33 * float(np.clip(value, -1, 1)))  # light ends: the text stays legible
        ax.imshow(colours, extent=(0, width, len(grid) or 1, 0), aspect="auto", interpolation="nearest")
        for row, line in enumerate(grid):  # one artist per character, centred on its cell
            for col, (char, _) in enumerate(line):
                ax.text(col + 0.5, row + 0.55, char, family="monospace", fontsize=7.5, va="center", ha="center")
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=10, y=0.995)
    return _save_png_svg(fig, out, dpi=120)
