"""The cell finder: every cell of every layer scored against named properties of the text.

Scores stream in a chunk at a time, in constant memory: ROC AUC for binary properties from 256-bin
histograms of the int8-quantised activation, Pearson r for numeric ones from running sums. The
chance level is measured by scoring every cell against the same property shifted by half the text
(a control that keeps both series' autocorrelation); the best control score is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .properties import Property

BINS = 256
FLUSH_ROWS = 4096  # positions histogrammed together: 8 MB of int8 for a 2x512 LSTM's 2,048 cells


@dataclass
class CellScore:
    cell: Any  # explain.CellRef
    score: float  # ROC AUC (binary property) or Pearson r (numeric)


@dataclass
class PropertyResult:
    """How well the best cells track one property of the text."""

    name: str
    kind: str  # "binary" or "numeric"
    description: str
    statistic: str  # "ROC AUC" or "Pearson r"
    chance: float  # 0.5 for AUC, 0 for r
    present: bool  # False if the property is constant over this text (nothing to score)
    ranked: list[CellScore]  # best first (by |AUC - 0.5| or |r|)
    control: float  # the best cell's score against the property shifted by half the text
    share: float  # binary: fraction of positions where it holds; numeric: mean value
    excerpt: tuple[int, int] = (0, 0)  # a stretch of the text where the property changes most (start, stop)

    @property
    def best(self) -> CellScore | None:
        return self.ranked[0] if self.ranked else None


class CellFinder:
    """Scores every cell against every property as chunks stream by (histograms and sums only)."""

    def __init__(self, props: Sequence[Property], num_cells: int):
        self.props = list(props)
        n = len(self.props[0].values) if self.props else 0
        shift = n // 2
        self.controls = [np.roll(p.values, shift) for p in self.props]
        self.num_cells = num_cells
        self.hist_all = np.zeros(num_cells * BINS, dtype=np.int32)  # counts stay below the 2M-character limit
        self.hist_pos = {}
        self.sums: dict[tuple[int, bool], np.ndarray] = {}
        for i, p in enumerate(self.props):
            for control in (False, True):
                if p.kind == "binary":
                    self.hist_pos[(i, control)] = np.zeros(num_cells * BINS, dtype=np.int32)
                else:
                    self.sums[(i, control)] = np.zeros((3, num_cells))  # sum y, sum y^2 (first col), sum xy
        self.sum_x = np.zeros(num_cells)
        self.sum_xx = np.zeros(num_cells)
        self.count = 0
        self._pending: list[np.ndarray] = []  # quantised chunks not histogrammed yet (see _flush)
        self._pending_start = 0
        self._pending_rows = 0

    def add(self, start: int, x: np.ndarray, quantised: np.ndarray) -> None:
        """One chunk of consecutive positions: `x` (rows, cells) in [-1, 1] and its int8 quantisation."""
        rows = len(x)
        expected = self._pending_start + self._pending_rows if self._pending else self.count
        if start != expected:
            raise ValueError(f"chunks must come in order: expected position {expected}, got {start}")
        x64 = x.astype(np.float64)
        self.sum_x += x64.sum(axis=0)
        self.sum_xx += np.einsum("tc,tc->c", x64, x64)
        self.count += rows
        for i, p in enumerate(self.props):
            if p.kind != "binary":
                for control in (False, True):
                    y = (self.controls[i] if control else p.values)[start : start + rows]
                    s = self.sums[(i, control)]
                    s[0, 0] += y.sum()
                    s[1, 0] += (y * y).sum()
                    s[2] += y @ x64
        if not self._pending:
            self._pending_start = start
        self._pending.append(quantised)
        self._pending_rows += rows
        if self._pending_rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Histogram the pending positions. Batched because each bincount also pays for its whole
        output (cells x 256 bins): per 512-position chunk that was most of the finder's time."""
        if not self._pending:
            return
        quantised = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        start, rows = self._pending_start, self._pending_rows
        self._pending, self._pending_rows = [], 0
        size = self.num_cells * BINS
        keys = quantised.astype(np.int32) + (BINS // 2) + np.arange(self.num_cells, dtype=np.int32) * BINS
        chunk_all = np.bincount(keys.ravel(), minlength=size)
        self.hist_all += chunk_all
        for i, p in enumerate(self.props):
            if p.kind != "binary":
                continue
            for control in (False, True):
                mask = (self.controls[i] if control else p.values)[start : start + rows] > 0.5
                pos = int(mask.sum())
                if pos == 0:
                    continue
                if pos <= rows // 2:
                    self.hist_pos[(i, control)] += np.bincount(keys[mask].ravel(), minlength=size)
                else:  # count the smaller side
                    self.hist_pos[(i, control)] += chunk_all - np.bincount(keys[~mask].ravel(), minlength=size)

    def _auc(self, i: int, control: bool) -> np.ndarray:
        pos = self.hist_pos[(i, control)].reshape(self.num_cells, BINS).astype(np.float64)
        neg = self.hist_all.reshape(self.num_cells, BINS).astype(np.float64) - pos
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        below = np.cumsum(neg, axis=1) - neg
        with np.errstate(invalid="ignore", divide="ignore"):
            return (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)

    def _pearson(self, i: int, control: bool) -> np.ndarray:
        s, n = self.sums[(i, control)], self.count
        sy, syy, sxy = s[0, 0], s[1, 0], s[2]
        var_x = n * self.sum_xx - self.sum_x**2
        var_y = n * syy - sy**2
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (n * sxy - self.sum_x * sy) / np.sqrt(var_x * var_y)
        return np.where(var_x > 1e-12 * n * n, r, 0.0)  # a cell that never moves tracks nothing

    def results(self, column_cell: Callable[[int], Any], top: int) -> list[PropertyResult]:
        """Per property: the `top` cells (named by `column_cell(column)`) best first, and the control."""
        self._flush()
        out = []
        for i, p in enumerate(self.props):
            binary = p.kind == "binary"
            values = p.values
            present = bool(values.min() != values.max())
            chance = 0.5 if binary else 0.0
            ranked: list[CellScore] = []
            control = float("nan")
            if present:
                scores = self._auc(i, False) if binary else self._pearson(i, False)
                controls = self._auc(i, True) if binary else self._pearson(i, True)
                scores = np.where(np.isfinite(scores), scores, chance)  # undefined: no signal, never NaN in a record
                strength = np.nan_to_num(np.abs(scores - chance), nan=-1.0)
                order = np.argsort(-strength, kind="stable")[:top]
                ranked = [CellScore(column_cell(int(c)), float(scores[c])) for c in order]
                best_control = int(np.nanargmax(np.abs(controls - chance))) if np.isfinite(controls).any() else 0
                control = float(controls[best_control])
            out.append(PropertyResult(p.name, p.kind, p.description, "ROC AUC" if binary else "Pearson r", chance,
                                      present, ranked, control, float(values.mean()), excerpt_window(values)))
        return out


def excerpt_window(values: np.ndarray, length: int = 300) -> tuple[int, int]:
    """Where to show a property's cell: a stretch of `length` characters in which the property changes
    most often (binary) or spans its range (numeric); (start, stop)."""
    n = len(values)
    if n <= length:
        return 0, n
    changes = np.abs(np.diff(values)) > 0
    window = np.convolve(changes.astype(float), np.ones(length - 1), mode="valid")
    start = int(np.argmax(window)) if len(window) else 0
    return start, min(n, start + length)
