"""The `charrnn explain` page: one self-contained HTML file built from an `Explanation`.

No network and no external files: CSS, script and figures are inline, the data is one JSON block.
Everything from the text reaches the page through that JSON block (with <, > and & written as \\u
escapes, so a text holding `</script>` cannot end it) and is put into the page with `textContent`,
never as markup -- a text full of HTML renders as the text it is.

Only what the page shows is embedded: the text, per position the probability of its character and
the top-k candidates (probabilities as 16-bit integers), and the shown cells as int8 (base64).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .explain import Explanation


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def page_data(result: Explanation) -> dict[str, Any]:
    """The JSON the page's script reads: plain lists, numbers and base64 typed arrays."""
    pred = result.predictions
    k = pred.top_ids.shape[1]
    id_type = np.uint8 if len(result.chars) < 255 else np.uint16  # the largest value marks "no candidate"
    top_ids = np.where(pred.top_ids < 0, np.iinfo(id_type).max, pred.top_ids).astype(id_type)
    cells = list(result.cells)
    finder = []
    for r in result.finder:
        row: dict[str, Any] = {"name": r.name, "kind": r.kind, "description": r.description, "statistic": r.statistic,
                               "chance": r.chance, "present": r.present, "share": r.share,
                               "control": None if not np.isfinite(r.control) else round(r.control, 4),
                               "ranked": [{"cell": str(c.cell), "score": round(c.score, 4)} for c in r.ranked]}
        if r.ranked:
            row["excerpt"] = list(r.excerpt)
        finder.append(row)
    data: dict[str, Any] = {
        "text": result.text,
        "chars": result.chars,
        "k": k,
        "idBytes": np.dtype(id_type).itemsize,
        "prob": _b64(np.nan_to_num(pred.prob, nan=-1.0).astype("<f4")),
        "topIds": _b64(top_ids.astype(np.dtype(id_type).newbyteorder("<"))),
        "topProbs": _b64(np.rint(pred.top_probs * 65535).astype("<u2")),
        "cells": [{"name": name, "values": _b64(np.rint(result.cells[name] * 127).astype(np.int8))} for name in cells],
        "userCells": result.user_cells,
        "finder": finder,
        "mostSurprised": pred.most_surprised(12),
        "leastSurprised": pred.least_surprised(12),
        "meanSurprisal": float(np.nanmean(pred.surprisal)),
        "model": f"{result.num_layers}x{result.hidden_size} {result.model_type.upper()}",
        "source": result.source,
    }
    if result.lens is not None:
        lens = result.lens
        top = np.argsort(-np.max([p for _, p in lens.rows], axis=0), kind="stable")[:10]  # likely under any setting
        data["lens"] = {"position": lens.position, "context": lens.context, "actual": lens.actual,
                        "rows": [{"label": label, "probs": [round(float(p[i]), 4) for i in top]} for label, p in lens.rows],
                        "chars": [lens.chars[i] for i in top]}
    if result.ngram is not None:
        ng = result.ngram
        data["ngram"] = {"order": ng.order, "modelNats": ng.model_nats, "ngramNats": ng.ngram_nats,
                         "diff": _b64(np.rint(np.clip(np.nan_to_num(ng.difference), -30, 30) * 1000).astype("<i2")),
                         "byChar": [list(r) for r in ng.by_char], "modelWins": ng.model_wins, "ngramWins": ng.ngram_wins}
    return data


def script_json(data: Mapping[str, Any]) -> str:
    """JSON safe inside a <script> element: nothing in it can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_page(result: Explanation, images: Mapping[str, bytes] | None = None, title: str = "charrnn explain",
                timeline: list[Any] | None = None, sample_chars: int = 400) -> str:
    """The whole page as a string; `timeline` (charrnn.timeline entries) adds the training evolution."""
    images = images or {}
    data = page_data(result)
    data["timeline"] = [{"step": e.step, "val": e.val_loss, "train": e.train_loss, "seconds": e.seconds,
                         "sample": None if e.sample is None else e.sample[:sample_chars]} for e in timeline or []]
    parts = {
        "TITLE": html.escape(title),
        "FIGURES_GATES": _figure(images, "gates", "Gate saturation: the fraction of steps each gate unit is "
                                 "left-saturated (< 0.1) against right-saturated (> 0.9)"),
        "FIGURES_LENS": _figure(images, "temperature", "The next-character distribution at one position under each setting"),
        "DATA": script_json(data),
    }
    # One pass, so nothing substituted (the text, a title) is ever read as a placeholder itself.
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: parts[m.group(1)], _TEMPLATE)


def _figure(images: Mapping[str, bytes], key: str, caption: str) -> str:
    if key not in images:
        return "<p class='note'>(no figure)</p>"
    uri = "data:image/png;base64," + base64.b64encode(images[key]).decode("ascii")
    return f"<figure><img alt='{html.escape(caption)}' src='{uri}'><figcaption>{html.escape(caption)}</figcaption></figure>"


_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{TITLE}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222}
header{padding:.6em 1em;background:#f4f4f4;border-bottom:1px solid #ddd}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
main{display:flex;gap:1em;padding:0 1em}
#left{flex:1;min-width:0}#side{width:330px;flex:none;position:sticky;top:0;align-self:flex-start;max-height:100vh;overflow:auto}
#text,.excerpt{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;word-break:break-all;line-height:1.5}
#text{max-height:70vh;overflow:auto;border:1px solid #ddd;padding:.5em}
#text span,.excerpt span{cursor:pointer}
#text span.sel{outline:2px solid #000}#text span:hover{outline:1px solid #555}
.excerpt{border:1px solid #eee;padding:.3em;max-height:9em;overflow:auto}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:.2em .45em;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666;font-size:.92em}a.cell,a.pos{cursor:pointer;color:#0645ad;text-decoration:underline}
img{max-width:100%;border:1px solid #ddd}figure{margin:.5em 0}figcaption{color:#555;font-size:.9em}
.bar{display:inline-block;height:.8em;background:#4a7fd6}
.legend span{display:inline-block;width:1.6em;height:.9em;vertical-align:middle}
</style></head><body>
<header><h1>{{TITLE}}</h1><div id="about" class="note"></div></header>
<main><div id="left">
<h2>The text</h2>
<div>Colour: <select id="mode"></select> <span id="legend" class="legend note"></span></div>
<p class="note">Hover a character for what the model expected there; click to pin it.</p>
<div id="text"></div>
<h2>Where the model is most and least surprised</h2><div id="surprise"></div>
<h2>Cell finder</h2>
<p class="note">Every cell (hidden state h and, for an LSTM, cell state c, of every layer; tanh-scaled to [-1, 1])
scored against each property of the text. Binary properties: ROC AUC (0.5 is chance; 1 means the cell is higher
wherever the property holds, 0 lower). Numeric ones: Pearson r. <i>Control</i> is the best score any cell reaches
against the same property shifted by half the text: what chance gives when this many cells are tried.
Excerpts are coloured by the best cell (red +1, blue -1).</p>
<div id="finder"></div>
<h2>Gates</h2>{{FIGURES_GATES}}
<h2>Temperature lens</h2><div id="lens"></div>{{FIGURES_LENS}}
<div id="ngram"></div>
<div id="timeline"></div>
</div><aside id="side"><h2>At this position</h2><div id="info" class="note">hover the text</div></aside></main>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function bytes(b64){const s=atob(b64),a=new Uint8Array(s.length);for(let i=0;i<s.length;i++)a[i]=s.charCodeAt(i);return a.buffer;}
const text = Array.from(D.text), n = text.length, K = D.k;
const prob = new Float32Array(bytes(D.prob));
const topIds = D.idBytes === 1 ? new Uint8Array(bytes(D.topIds)) : new Uint16Array(bytes(D.topIds));
const topProbs = new Uint16Array(bytes(D.topProbs));
const cells = {}; for (const c of D.cells) cells[c.name] = new Int8Array(bytes(c.values));
const diff = D.ngram ? new Int16Array(bytes(D.ngram.diff)) : null;
function el(tag, attrs, ...kids){const e=document.createElement(tag);for(const k in attrs||{})e.setAttribute(k,attrs[k]);
  for(const c of kids)e.append(c);return e;}
function shown(ch){return ch==="\\n"?"\\u21b5":ch===" "?"\\u2423":ch==="\\t"?"\\u21e5":ch;}
function red(v){const a=Math.round(255-200*v);return "rgb(255,"+a+","+a+")";}
function signed(v){const a=Math.round(255-190*Math.min(1,Math.abs(v)));  // light enough to read the text on
  return v>=0?"rgb(255,"+a+","+a+")":"rgb("+a+","+a+",255)";}
const about = document.getElementById("about");
about.textContent = D.model + " \\u00b7 " + n.toLocaleString() + " characters \\u00b7 mean surprisal " +
  D.meanSurprisal.toFixed(3) + " nats/char" + (D.source.checkpoint ? " \\u00b7 " + D.source.checkpoint : "") +
  (D.source.text ? " \\u00b7 text: " + D.source.text : "");
// the text, one span per character
const box = document.getElementById("text"), frag = document.createDocumentFragment(), spans = new Array(n);
for (let i = 0; i < n; i++) { const s = document.createElement("span"); s.textContent = text[i]; s.dataset.i = i; spans[i] = s; frag.append(s); }
box.append(frag);
const modes = [["prob", "probability of each character"]];
for (const c of D.userCells) modes.push(["cell:" + c, "cell " + c + " (yours)"]);
const bestOf = {}; for (const r of D.finder) if (r.ranked.length && !(r.ranked[0].cell in bestOf)) bestOf[r.ranked[0].cell] = r.name;
for (const c of Object.keys(cells)) if (!D.userCells.includes(c)) modes.push(["cell:" + c, "cell " + c + (bestOf[c] ? " (best for " + bestOf[c] + ")" : "")]);
if (diff) modes.push(["ngram", "network vs " + D.ngram.order + "-gram"]);
const mode = document.getElementById("mode");
for (const [v, label] of modes) mode.append(el("option", {value: v}, label));
let current = "prob", pinned = -1;
function colour(v){
  const legend = document.getElementById("legend"); legend.textContent = "";
  if (v === "prob") { // shaded by surprisal, saturating at p = 0.01: linear in p paints most characters alike
    for (let i = 0; i < n; i++) spans[i].style.background = prob[i] < 0 ? "" : red(Math.min(1, -Math.log(Math.max(prob[i], 1e-30)) / Math.log(100)));
    legend.append("white: the model was sure of the character (p = 1) \\u2026 red: p \\u2264 0.01 (the shade grows with the surprisal, -ln p)"); }
  else if (v === "ngram") { for (let i = 0; i < n; i++) { const d = Math.max(-1, Math.min(1, diff[i] / 3000));
      spans[i].style.background = d >= 0 ? "rgb("+Math.round(255*(1-d))+",255,"+Math.round(255*(1-d))+")" : "rgb(255,"+Math.round(255*(1+d))+",255)"; }
    legend.append("green: the network lost fewer nats than the n-gram \\u2026 purple: the n-gram did better (\\u00b13 nats saturates)"); }
  else { const a = cells[v.slice(5)]; for (let i = 0; i < n; i++) spans[i].style.background = signed(a[i] / 127);
    legend.append("red: +1 \\u2026 white: 0 \\u2026 blue: -1 (tanh-scaled activation after reading the character)"); }
  current = v;
}
mode.addEventListener("change", () => colour(mode.value));
function info(i){
  const box = document.getElementById("info"); box.textContent = "";
  box.append(el("div", {}, "position " + i + ": ", el("b", {}, shown(text[i]))));
  if (prob[i] >= 0) { box.append(el("div", {}, "p = " + prob[i].toFixed(4) + ", surprisal " + (-Math.log(Math.max(prob[i], 1e-30))).toFixed(3) + " nats"));
    const t = el("table", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "candidate"), el("th", {}, "p"), el("th", {}, "")));
    for (let j = 0; j < K; j++) { const id = topIds[i * K + j]; if (id >= D.chars.length) continue; const p = topProbs[i * K + j] / 65535;
      const row = el("tr", {}, el("td", {}, String(j + 1)), el("td", {}, shown(D.chars[id])), el("td", {class: "num"}, p.toFixed(4)),
        el("td", {}, el("span", {class: "bar", style: "width:" + Math.round(p * 120) + "px"})));
      if (D.chars[id] === text[i]) row.style.fontWeight = "bold"; t.append(row); }
    box.append(el("div", {}, "the model's top " + K + " for this position:"), t);
  } else box.append(el("div", {}, "(the first character: nothing before it to predict it from)"));
  if (current.startsWith("cell:")) box.append(el("div", {}, current.slice(5) + " = " + (cells[current.slice(5)][i] / 127).toFixed(3)));
  if (diff && i > 0) box.append(el("div", {}, "n-gram \\u2212 network: " + (diff[i] / 1000).toFixed(3) + " nats"));
  const ctx = text.slice(Math.max(0, i - 30), i).map(shown).join("");
  box.append(el("div", {class: "note"}, "after \\u201c" + ctx + "\\u201d"));
}
box.addEventListener("mouseover", e => { const i = e.target.dataset && e.target.dataset.i; if (i !== undefined && pinned < 0) info(+i); });
box.addEventListener("click", e => { const i = e.target.dataset && e.target.dataset.i; if (i === undefined) return;
  if (pinned >= 0) spans[pinned].classList.remove("sel"); pinned = pinned === +i ? -1 : +i;
  if (pinned >= 0) { spans[pinned].classList.add("sel"); info(pinned); } });
function goTo(i){ if (pinned >= 0) spans[pinned].classList.remove("sel"); pinned = i; spans[i].classList.add("sel");
  spans[i].scrollIntoView({block: "center"}); info(i); }
function posLink(i, before){ const ctx = text.slice(Math.max(0, i - (before || 24)), i).map(shown).join("");
  const a = el("a", {class: "pos"}, ctx, el("b", {}, shown(text[i]))); a.addEventListener("click", () => goTo(i)); return a; }
// surprise summary
{ const s = document.getElementById("surprise"), t = el("table", {}, el("tr", {}, el("th", {}, "most surprised (context \\u2192 character)"), el("th", {}, "p"),
    el("th", {}, "least surprised"), el("th", {}, "p")));
  for (let j = 0; j < D.mostSurprised.length; j++) { const a = D.mostSurprised[j], b = D.leastSurprised[j];
    t.append(el("tr", {}, el("td", {}, posLink(a)), el("td", {class: "num"}, prob[a].toFixed(4)), el("td", {}, posLink(b)), el("td", {class: "num"}, prob[b].toFixed(4)))); }
  s.append(t); }
// finder
{ const f = document.getElementById("finder");
  const t = el("table", {}, el("tr", {}, el("th", {}, "property"), el("th", {}, "statistic"), el("th", {}, "best cells (score)"), el("th", {}, "control"), el("th", {}, "excerpt, coloured by the best cell")));
  for (const r of D.finder) {
    const cellsTd = el("td", {});
    if (!r.present) cellsTd.append("not in this text");
    for (const c of r.ranked) { const a = el("a", {class: "cell"}, c.cell); a.addEventListener("click", () => { mode.value = "cell:" + c.cell; colour(mode.value); box.scrollIntoView(); });
      cellsTd.append(a, " " + c.score.toFixed(3), el("br")); }
    const ex = r.ranked.length && r.excerpt ? el("div", {class: "excerpt"}) : el("span", {class: "note"}, "-");
    if (r.ranked.length && r.excerpt) { const a = cells[r.ranked[0].cell];
      for (let i = r.excerpt[0]; i < r.excerpt[1]; i++) { const s = el("span", {title: (a[i] / 127).toFixed(3)}, text[i]); s.style.background = signed(a[i] / 127); ex.append(s); } }
    t.append(el("tr", {}, el("td", {}, el("b", {}, r.name), el("br"), el("span", {class: "note"}, r.description + (r.kind === "binary" ? " (" + (100 * r.share).toFixed(1) + "% of the text)" : " (mean " + r.share.toFixed(2) + ")"))),
      el("td", {}, r.statistic + ", chance " + r.chance), cellsTd, el("td", {class: "num"}, r.control === null ? "-" : r.control.toFixed(3)), el("td", {}, ex)));
  }
  f.append(t); }
// temperature lens
if (D.lens) { const L = D.lens, box2 = document.getElementById("lens");
  box2.append(el("p", {}, "Position " + L.position + ", after \\u201c", el("code", {}, Array.from(L.context).map(shown).join("")), "\\u201d (the text has ", el("b", {}, shown(L.actual)), "):"));
  const t = el("table", {}, el("tr", {}, el("th", {}, "setting"), ...L.chars.map(c => el("th", {}, shown(c)))));
  for (const r of L.rows) t.append(el("tr", {}, el("td", {}, r.label), ...r.probs.map(p => el("td", {class: "num"}, p.toFixed(3)))));
  box2.append(t); }
// n-gram comparison
if (D.ngram) { const G = D.ngram, g = document.getElementById("ngram");
  g.append(el("h2", {}, "The network against a " + G.order + "-gram model"),
    el("p", {}, "Mean loss on this text: network " + G.modelNats.toFixed(4) + " nats/char, interpolated Kneser-Ney " + G.order + "-gram " + G.ngramNats.toFixed(4) + " nats/char (fitted on the run's training text)."));
  const t = el("table", {}, el("tr", {}, el("th", {}, "character"), el("th", {}, "count"), el("th", {}, "n-gram \\u2212 network (nats)")));
  const rows = G.byChar.length > 16 ? G.byChar.slice(0, 8).concat(G.byChar.slice(-8)) : G.byChar;
  for (const [c, count, d] of rows) t.append(el("tr", {}, el("td", {}, shown(c)), el("td", {class: "num"}, String(count)), el("td", {class: "num"}, d.toFixed(3))));
  g.append(el("p", {}, "Per character (positive: the network does better; best and worst 8):"), t);
  const w = el("table", {}, el("tr", {}, el("th", {}, "the network wins most"), el("th", {}, "nats"), el("th", {}, "the n-gram wins most"), el("th", {}, "nats")));
  for (let j = 0; j < Math.min(G.modelWins.length, G.ngramWins.length); j++) { const a = G.modelWins[j], b = G.ngramWins[j];
    w.append(el("tr", {}, el("td", {}, posLink(a)), el("td", {class: "num"}, (diff[a] / 1000).toFixed(2)), el("td", {}, posLink(b)), el("td", {class: "num"}, (diff[b] / 1000).toFixed(2)))); }
  g.append(w); }
// training evolution
if (D.timeline.length) { const T = document.getElementById("timeline");
  T.append(el("h2", {}, "Training evolution"), el("p", {class: "note"}, "Each evaluation of the run: its step, losses and the sample drawn there (when the run recorded samples)."));
  const t = el("table", {}, el("tr", {}, el("th", {}, "step"), el("th", {}, "validation loss"), el("th", {}, "training loss"), el("th", {}, "sample")));
  for (const e of D.timeline) t.append(el("tr", {}, el("td", {class: "num"}, String(e.step)), el("td", {class: "num"}, e.val === null ? "" : e.val.toFixed(4)),
    el("td", {class: "num"}, e.train === null ? "" : e.train.toFixed(4)), el("td", {}, el("div", {class: "excerpt"}, e.sample === null ? "(not recorded)" : e.sample))));
  T.append(t); }
colour("prob");
document.body.dataset.ready = "1";
</script></body></html>
"""


def finder_csv(result: Explanation) -> str:
    """The cell finder's ranked lists as CSV: property, statistic, rank, cell, score, control."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["property", "statistic", "chance", "rank", "cell", "score", "control"])
    for r in result.finder:
        for rank, c in enumerate(r.ranked, 1):
            writer.writerow([r.name, r.statistic, r.chance, rank, str(c.cell), f"{c.score:.4f}", f"{r.control:.4f}"])
    return buf.getvalue()


def write_explanation(result: Explanation, out_dir: str | os.PathLike, title: str = "charrnn explain",
                      timeline: list[Any] | None = None) -> dict[str, Path]:
    """Write explain.html (self-contained), gates.png/svg, temperature.png/svg, cells.png/svg (the best
    cell per property over its excerpt), finder.csv (and,
    given a run's `timeline`, timeline.md) into `out_dir`; returns the paths by name. Every file is
    written through a temporary file and a rename."""
    from . import plots
    from .atomic import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    images: dict[str, bytes] = {}
    subtitle = f"{result.num_layers}x{result.hidden_size} {result.model_type.upper()}, {len(result.text):,} characters"
    if result.gates:
        png, svg = plots.plot_gate_saturation(
            [{"layer": g.layer, "gate": g.gate, "left": g.left, "right": g.right} for g in result.gates],
            out / "gates", subtitle=subtitle)
        written.update(gates_png=png, gates_svg=svg)
        images["gates"] = png.read_bytes()
    excerpts = [{"title": f"{r.name}: cell {r.best.cell}, {r.statistic} {r.best.score:.3f} (control {r.control:.3f})",
                 "text": result.text[r.excerpt[0] : r.excerpt[0] + 240],
                 "values": result.cells[str(r.best.cell)][r.excerpt[0] : r.excerpt[0] + 240]}
                for r in result.finder if r.best is not None]
    if excerpts:
        png, svg = plots.plot_cell_excerpts(excerpts, out / "cells", subtitle=subtitle + "; red +1, blue -1")
        written.update(cells_png=png, cells_svg=svg)
    if result.lens is not None:
        lens = result.lens
        context = lens.context[-30:].replace("\n", "\u21b5")
        png, svg = plots.plot_temperature_lens([(label, list(p)) for label, p in lens.rows], lens.chars,
                                               out / "temperature", actual=lens.actual,
                                               subtitle=f"position {lens.position}, after \u201c{context}\u201d "
                                                        f"(red: the character that came)")
        written.update(temperature_png=png, temperature_svg=svg)
        images["temperature"] = png.read_bytes()
    page = render_page(result, images, title, timeline)
    atomic_write(out / "explain.html", lambda f: f.write(page), mode="w")
    written["html"] = out / "explain.html"
    csv_text = finder_csv(result)
    atomic_write(out / "finder.csv", lambda f: f.write(csv_text), mode="w")
    written["finder_csv"] = out / "finder.csv"
    if timeline:
        from .timeline import timeline_markdown

        markdown = "# Training evolution\n\n" + timeline_markdown(timeline)
        atomic_write(out / "timeline.md", lambda f: f.write(markdown), mode="w")
        written["timeline_md"] = out / "timeline.md"
    return written
