"""Figures from plain data (histories, sweep records); the only module that imports matplotlib."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _read_metrics(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if path is None or not Path(path).exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(history: dict[str, list], out: str | os.PathLike,
                metrics: str | os.PathLike | None = None) -> Path:
    """Train and validation loss against steps and against minutes, written atomically as PNG."""
    plt = _pyplot()
    rows = _read_metrics(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "time", "wall clock (minutes)")):
        scale = 1 / 60 if key == "time" else 1
        if rows:
            xs = [r[key] * scale for r in rows if key in r]
            ys = _smooth([r["loss"] for r in rows if key in r], 50)
            ax.plot(xs, ys, color="tab:blue", alpha=0.8, lw=1, label="train (per step, smoothed)")
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
        ax.set_xlabel(label)
        ax.set_ylabel("cross-entropy (nats/char)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("charrnn training loss")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
