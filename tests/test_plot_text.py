"""Figures draw the text a model or a user wrote literally: no mathtext, no crash, no warning as error."""

from __future__ import annotations

import pytest

from charrnn import plots, sweep

# What a model trained on LaTeX, code, chat logs or another script can write, and what a corpus or run
# can be named: mathtext markup that parses ($x$), markup that does not ($, \, ^, {), characters the
# font lacks (CJK, emoji) and control characters.
HARD_TEXTS = {
    "dollar": "costs $5",
    "math": "where $x^2_{i}$ holds",
    "backslash": r"\alpha \ and \frac{1}{2}",
    "underscore": "snake_case_name",
    "caret": "2^10 and x^y",
    "braces": "{ open and } close",
    "percent-hash": "100% # comment",
    "cjk": "漢字かな交じり文",
    "emoji": "ok 😀🎉",
    "control": "bell\x07 escape\x1b nul\x00 del\x7f cr\r",
}


def _summary(temperatures=(0.5, 1.0, 2.0)):
    spread = {"mean": 0.25, "std": 0.0, "min": 0.2, "max": 0.3}
    rows = [{"setting": sweep.label(t), "temperature": t, "greedy": False, "num_samples": 1, "loop_periods": [0],
             "metrics": {k: spread for k in sweep.METRIC_KEYS}} for t in temperatures]
    return [{**rows[0], "setting": sweep.GREEDY, "temperature": 0.0, "greedy": True, "loop_periods": [3]}, *rows]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure handed to the PNG/SVG writer, and every string matplotlib parsed as mathtext."""
    import matplotlib.mathtext

    figures, parsed = [], []
    save = plots._save_png_svg
    monkeypatch.setattr(plots, "_save_png_svg", lambda fig, out, **kw: (figures.append(fig), save(fig, out, **kw))[1])
    parse = matplotlib.mathtext.MathTextParser.parse
    monkeypatch.setattr(matplotlib.mathtext.MathTextParser, "parse",
                        lambda self, s, *a, **kw: (parsed.append(s), parse(self, s, *a, **kw))[1])
    return figures, parsed


def _texts(fig):
    import matplotlib.text

    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_spectrum_draws_excerpts_and_titles_literally(drawn, tmp_path):
    figures, parsed = drawn
    summary = _summary()
    hard = list(HARD_TEXTS.values())
    # Each excerpt carries several of the hard texts (one figure for all keeps the test fast).
    excerpts = {row["setting"]: "\n".join(hard[i::len(summary)]) for i, row in enumerate(summary)}
    title, subtitle = f"run {hard[0]} {hard[1]} {hard[7]}", f"corpus /data/{hard[2]}{hard[3]}{hard[4]}.txt"
    png, svg = plots.plot_spectrum(summary, excerpts, tmp_path / "spectrum", title=title, subtitle=subtitle)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in svg.read_text(encoding="utf-8")
    texts = {t.get_text(): t for t in _texts(figures[-1])}
    for expected in (*excerpts.values(), f"{title}\n{subtitle}"):
        assert expected in texts, f"{expected!r} is not drawn as given"
        assert texts[expected].get_parse_math() is False
    assert not [s for s in parsed if any(h in s for h in hard)], "sample text went through mathtext"


def test_sweep_figure_draws_its_title_literally(drawn, tmp_path):
    figures, parsed = drawn
    hard = " ".join(HARD_TEXTS[name] for name in ("dollar", "math", "backslash", "cjk", "control"))
    metrics = [{"key": "repeated_ngram_share", "title": "Repeated 8-grams", "unit": "share of 8-grams"}]
    png, _ = plots.plot_sweep(_summary(), tmp_path / "sweep", metrics=metrics, title=f"Temperature sweep - {hard}",
                              subtitle=hard)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    title = f"Temperature sweep - {hard}\n{hard}"
    assert [t.get_parse_math() for t in _texts(figures[-1]) if t.get_text() == title] == [False]
    assert not [s for s in parsed if hard in s]
