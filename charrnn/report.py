"""Sweep reports: render a sweep's data as Markdown and as one self-contained HTML page.

Pure rendering from plain data (`SweepResult.to_dict()` and the sample texts): no files, no
model, no plotting. The HTML embeds its images as data URIs so the page can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

EXCERPT_CHARS = 600  # characters of each sample shown in the HTML page (the files hold them all)
TABLE_COLUMNS = (
    ("repeated_ngram_share", "repeated 8-grams", "{:.1%}"),
    ("compression_ratio", "zlib ratio", "{:.2f}"),
    ("loop", "ends in loop", "{:.0%}"),
    ("invented_word_share", "invented words", "{:.1%}"),
    ("copied_ngram_share", "copied 10-grams", "{:.1%}"),
    ("longest_copy", "longest copy (chars)", "{:.0f}"),
    ("entropy", "entropy (nats/char)", "{:.3f}"),
    ("nll", "NLL at T=1 (nats/char)", "{:.3f}"),
)


def _cell(stats: Mapping[str, float], fmt: str, spread: bool = True) -> str:
    mean = fmt.format(stats["mean"])
    if not spread or stats["min"] == stats["max"]:
        return mean
    return f"{mean} ({fmt.format(stats['min'])}–{fmt.format(stats['max'])})"


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _source_lines(data: Mapping[str, Any]) -> list[str]:
    src, cfg = data.get("source", {}), data["config"]
    loss = src.get("best_val_loss")
    trained = f", best validation loss {loss:.4f} nats/char at step {src.get('step')}" if isinstance(loss, (int, float)) else ""
    corpus = (f"`{src.get('corpus')}` ({src.get('corpus_chars', 0):,} chars, sha256 "
              f"`{str(src.get('corpus_sha256', ''))[:12]}…`)") if src.get("corpus") else "(given directly)"
    params = f", {src['parameters'] / 1e6:.2f}M parameters" if src.get("parameters") else ""
    temps = ", ".join(f"{t:g}" for t in cfg["temperatures"])
    return [
        f"- **Checkpoint:** `{src.get('checkpoint', '?')}` ({src.get('model', '?')}{params}{trained})",
        f"- **Corpus:** {corpus}",
        f"- **Settings:** {'greedy + ' if cfg['greedy'] else ''}temperatures {temps}; {cfg['num_samples']} samples "
        f"of {cfg['length']} characters per temperature (greedy: 1), seed {cfg['seed']} (sample *i* uses seed "
        f"{cfg['seed']} + *i* at every temperature), "
        + (f"prime {cfg['prime']!r}" if cfg["prime"] else "no prime (the state is warmed on a newline)"),
        f"- **Wall time:** {_timing(data.get('timings', {}))}",
    ]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _timing(timings: Mapping[str, float]) -> str:
    parts = [f"{name} {timings[key]:.1f} s" for key, name in (
        ("total_s", "total"), ("index_s", "indexing the corpus"), ("generate_s", "sampling"),
        ("metrics_s", "metrics")) if key in timings]
    return ", ".join(parts) or "not recorded"


def _checks_lines(data: Mapping[str, Any]) -> list[str]:
    lines = ["| property | requirement | measured | holds |", "|---|---|---|---|"]
    for c in data.get("checks", []):
        lines.append(f"| {c['name']} | {c['requirement']} | {c['detail']} | {'yes' if c['passed'] else '**no**'} |")
    return lines


def _summary_lines(data: Mapping[str, Any]) -> list[str]:
    head = "| setting | " + " | ".join(name for _, name, _ in TABLE_COLUMNS) + " |"
    lines = [head, "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for row in data["summary"]:
        cells = [_cell(row["metrics"][key], fmt, spread=key != "loop") for key, _, fmt in TABLE_COLUMNS]
        lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
    rhos = data.get("correlations", {})
    shown = [(key, name) for key, name, _ in TABLE_COLUMNS if _finite(rhos.get(key))]
    lines.append("")
    lines.append("Spearman rank correlation with temperature (sampled temperatures, greedy excluded): "
                 + ", ".join(f"{name} {rhos[key]:+.3f}" for key, name in shown) + ".")
    return lines


def _loop_note(row: Mapping[str, Any]) -> str:
    periods = [p for p in row.get("loop_periods", []) if p]
    if not periods:
        return "no sample ends in a loop"
    return f"{len(periods)}/{len(row['loop_periods'])} end in a loop (period {', '.join(map(str, periods[:8]))} chars)"


def render_markdown(data: Mapping[str, Any], texts: Mapping[str, Sequence[str]]) -> str:
    """The report as Markdown: source, command, plots, a table per temperature, checks and samples."""
    cfg = data["config"]
    lines = ["# Temperature sweep", ""]
    lines += _source_lines(data)
    lines += ["", "Regenerate this report (and every file beside it) with:", "", "```bash", data.get("command", ""),
              "```", "", "## The spectrum", "", "![samples from repetitive to chaotic](spectrum.png)", "",
              "## Every metric against temperature", "", "![metrics against temperature](sweep.png)", "",
              "Mean over the samples, with the range (min–max) in brackets:", ""]
    lines += _summary_lines(data)
    lines += ["", "## Checks", ""]
    lines += _checks_lines(data)
    lines += ["", "## Samples", "", "The first sample of each setting, after the prime; every sample is in "
              "`samples/` (and `samples.jsonl`).", ""]
    for row in data["summary"]:
        setting = row["setting"]
        m = row["metrics"]
        lines += [f"### {setting}", "",
                  f"invented words {m['invented_word_share']['mean']:.1%}, repeated 8-grams "
                  f"{m['repeated_ngram_share']['mean']:.1%}, copied 10-grams {m['copied_ngram_share']['mean']:.1%}, "
                  f"entropy {m['entropy']['mean']:.3f} nats/char; {_loop_note(row)}.", ""]
        sample = cfg["prime"] + (texts.get(setting) or [""])[0]
        fence = _fence(sample)
        lines += [f"{fence}text", sample, fence, ""]
    return "\n".join(lines)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
pre.cmd{background:#f4f4f4;padding:.6em;overflow-x:auto}
img{max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ddd;padding:.3em .5em;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
.samples td{width:33%}.samples pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:28em;overflow:auto}
.fail{color:#b00;font-weight:bold}.pass{color:#070}
"""


def _md_inline(text: str) -> str:
    """Escape for HTML, then turn `code` and **bold** into tags (enough for the source lines)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", out).replace("*i*", "<i>i</i>")


def render_html(data: Mapping[str, Any], texts: Mapping[str, Sequence[str]],
                images: Mapping[str, bytes] | None = None) -> str:
    """The report as one self-contained HTML page: images embedded, samples side by side per temperature."""
    images = images or {}
    cfg = data["config"]
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>charrnn temperature sweep</title>",
             f"<style>{_CSS}</style></head><body>", "<h1>Temperature sweep</h1><ul>"]
    parts += [f"<li>{_md_inline(line[2:])}</li>" for line in _source_lines(data)]
    parts.append(f"</ul><p>Regenerate this report with:</p><pre class='cmd'>{e(data.get('command', ''))}</pre>")
    for key, heading in (("spectrum", "The spectrum"), ("sweep", "Every metric against temperature")):
        if key in images:
            uri = "data:image/png;base64," + base64.b64encode(images[key]).decode("ascii")
            parts.append(f"<h2>{heading}</h2><img alt='{e(heading)}' src='{uri}'>")
    parts.append("<h2>Per temperature</h2><p>Mean over the samples, range (min–max) in brackets.</p><table><tr><th>setting</th>")
    parts += [f"<th>{e(name)}</th>" for _, name, _ in TABLE_COLUMNS]
    parts.append("</tr>")
    for row in data["summary"]:
        parts.append(f"<tr><td>{e(row['setting'])}</td>")
        parts += [f"<td class='num'>{e(_cell(row['metrics'][key], fmt, spread=key != 'loop'))}</td>"
                  for key, _, fmt in TABLE_COLUMNS]
        parts.append("</tr>")
    parts.append("</table>")
    rhos = data.get("correlations", {})
    parts.append("<p>Spearman rank correlation with temperature (greedy excluded): " + ", ".join(
        f"{e(name)} {rhos[key]:+.3f}" for key, name, _ in TABLE_COLUMNS if _finite(rhos.get(key))) + ".</p>")
    parts.append("<h2>Checks</h2><table><tr><th>property</th><th>requirement</th><th>measured</th><th>holds</th></tr>")
    for c in data.get("checks", []):
        verdict = "<span class='pass'>yes</span>" if c["passed"] else "<span class='fail'>no</span>"
        parts.append(f"<tr><td>{e(c['name'])}</td><td>{e(c['requirement'])}</td><td>{e(c['detail'])}</td><td>{verdict}</td></tr>")
    parts.append("</table>")
    shown = min(3, max((len(v) for v in texts.values()), default=1))
    parts.append(f"<h2>Samples side by side</h2><p>The first {shown} samples of each setting (first "
                 f"{EXCERPT_CHARS} characters after the prime); the full texts are in <code>samples/</code>.</p>")
    parts.append("<table class='samples'>")
    for row in data["summary"]:
        setting = row["setting"]
        m = row["metrics"]
        parts.append(f"<tr><th colspan='{shown}' style='text-align:left'>{e(setting)} — invented "
                     f"{m['invented_word_share']['mean']:.1%}, repeated 8-grams {m['repeated_ngram_share']['mean']:.1%}, "
                     f"entropy {m['entropy']['mean']:.3f} nats/char; {e(_loop_note(row))}</th></tr><tr>")
        samples = list(texts.get(setting, []))[:shown]
        for text in samples:
            clipped = text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")
            parts.append(f"<td><pre>{e(cfg['prime'])}{e(clipped)}</pre></td>")
        parts += ["<td></td>"] * (shown - len(samples))
        parts.append("</tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)
