// charrnn playground: plain JavaScript, no build step, nothing loaded from the network.
// Every rule lives on the server: the page sends what the controls say and shows the server's
// one-line message next to the control it is about.
"use strict";

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));
const state = { runs: [], run: null, steps: [], streamId: null, abort: null, compare: [], pinned: null };
const SHOWN = { "\n": "↵", "\t": "→", " ": "␣" };
const show = (c) => SHOWN[c] || c;

// ---------------------------------------------------------------------------------------------
// talking to the server

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({ error: `the server answered ${res.status} without JSON` }));
  if (!res.ok) throw new ApiError(data.error || `error ${res.status}`, res.status);
  return data;
}

// POST and read server-sent events: onEvent(name, data) for each; resolves when the stream ends.
async function streamEvents(body, signal, onEvent) {
  const res = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }), signal });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw new ApiError(data.error || `error ${res.status}`, res.status);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(name, data ? JSON.parse(data) : {});
    }
  }
}

// ---------------------------------------------------------------------------------------------
// errors next to their controls

// The library's messages name the command-line options (--greedy, -t 0, --top-k, ...).
const FIELD_WORDS = [
  [/^(--)?(greedy|temperature 0|temperature [0-9.e-]+ always)|^-t [0-9.e-]+ always/, "greedy"],
  [/^(--)?beam|beam search|length penalty|length_penalty|length-penalty/, "beam"],
  [/top-k|top_k/, "top_k"], [/top-p|top_p/, "top_p"], [/epsilon/, "epsilon"],
  [/repetition/, "repetition_penalty"], [/temperature/, "temperature"],
  [/^(--)?stop|stop string|escape/, "stop"], [/^(--)?prime|prime /, "prime"], [/^seed/, "seed"],
  [/^(--)?length|characters is over|length /, "length"], [/^run|no run/, "run"],
];

function fieldOf(message) {
  for (const [pattern, field] of FIELD_WORDS) if (pattern.test(message)) return field;
  return "general";
}

function clearErrors(scope = document) {
  scope.querySelectorAll(".err").forEach((e) => { e.textContent = ""; });
  scope.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

function showError(message, field = fieldOf(message)) {
  const box = $(`.err[data-for="${field}"]`) || $('.err[data-for="general"]');
  box.textContent = message;
  const control = document.getElementById(field === "beam" ? "beam" : field);
  if (control) control.classList.add("invalid");
}

// ---------------------------------------------------------------------------------------------
// the controls

const num = (id) => { const v = $(`#${id}`).value.trim(); return v === "" ? null : Number(v); };

function decodingSettings() {
  const s = {};
  if ($("#greedy").checked) s.greedy = true;
  else s.temperature = num("temperature");
  const topK = num("top_k"); if (topK !== null) s.top_k = topK;
  const topP = num("top_p"); if (topP !== null && topP < 1) s.top_p = topP;
  const eps = num("epsilon"); if (eps) s.epsilon = eps;
  const rep = num("repetition_penalty"); if (rep && rep !== 1) s.repetition_penalty = rep;
  return s;
}

function request() {
  const body = { run: state.run, prime: $("#prime").value, length: num("length"), seed: num("seed") };
  const stop = $("#stop").value;
  if (stop) body.stop = stop;
  if ($("#use_beam").checked) body.beam = num("beam");
  else Object.assign(body, decodingSettings(), { candidates: 8 });
  return body;
}

function syncOutputs() {
  for (const id of ["temperature", "top_p", "epsilon", "repetition_penalty"]) {
    const v = Number($(`#${id}`).value);
    $(`#${id}-out`).textContent = id === "top_p" && v >= 1 ? "off" : id === "epsilon" && v === 0 ? "off"
      : id === "repetition_penalty" && v === 1 ? "off" : v.toFixed(2);
  }
  $("#temperature").disabled = $("#greedy").checked || $("#use_beam").checked;
}

// ---------------------------------------------------------------------------------------------
// runs

async function loadRuns() {
  try {
    const { runs } = await api("/api/runs");
    state.runs = runs;
    const select = $("#run");
    select.innerHTML = "";
    for (const r of runs) {
      const opt = document.createElement("option");
      opt.value = r.id;
      const loss = r.val_loss == null ? "no val loss" : `val ${r.val_loss.toFixed(3)} (${r.val_bits.toFixed(2)} bits)`;
      opt.textContent = [r.id, r.corpus, r.size, loss, (r.updated || "").slice(0, 10)].filter(Boolean).join(" · ");
      select.appendChild(opt);
    }
    if (!runs.length) {
      showError("no runs in this folder: train one with `charrnn train FILE`, then reload", "run");
      return;
    }
    pickRun(runs[0].id);
  } catch (e) { showError(e.message, "run"); }
}

function pickRun(id) {
  state.run = id;
  $("#run").value = id;
  const r = state.runs.find((x) => x.id === id);
  $("#runinfo").textContent = r ? `${r.corpus || "?"} · ${r.size || "?"} · ${r.parameters == null ? "?" : r.parameters.toLocaleString("en")} parameters · step ${r.step ?? "?"}` : "";
  const layer = $("#layer");
  layer.innerHTML = "";
  for (let i = 0; i < (r?.num_layers || 1); i++) {
    const opt = document.createElement("option");
    opt.value = i; opt.textContent = `${i + 1}${i === (r?.num_layers || 1) - 1 ? " (top)" : ""}`;
    layer.appendChild(opt);
  }
  layer.value = (r?.num_layers || 1) - 1;
  const kind = $("#kind");
  kind.querySelector('option[value="cell"]').disabled = r?.model !== "lstm";  // only an LSTM has a cell state
  if (r?.model !== "lstm") kind.value = "hidden";
  clearErrors();
  updateNext();
}

// ---------------------------------------------------------------------------------------------
// generate

function shade(p) { return `hsl(${Math.round(130 * Math.sqrt(p))} 75% 82%)`; }

function resetOutput() {
  state.steps = [];
  state.pinned = null;
  $("#output .prime").textContent = $("#prime").value;
  $("#output .gen").textContent = "";
  $("#stepinfo").textContent = "Hover a generated character.";
  $("#steptable").innerHTML = "";
}

function appendChars(target, text, steps) {
  const frag = document.createDocumentFragment();
  [...text].forEach((c, i) => {
    const span = document.createElement("span");
    span.textContent = c;
    if (c === "\n") span.className = "nl";
    if (steps && steps[i]) {
      span.dataset.i = state.steps.length;
      span.style.background = shade(steps[i].p);
      state.steps.push({ c, ...steps[i] });
    }
    frag.appendChild(span);
  });
  target.appendChild(frag);
}

function generatedText() { return $("#output .gen").textContent; }

async function generate() {
  if (state.abort) return;
  clearErrors($("#controls"));
  resetOutput();
  const body = request();
  const abort = new AbortController();
  state.abort = abort;
  setRunning(true);
  $("#genstate").textContent = "generating…";
  const gen = $("#output .gen");
  const box = $("#output");
  let lastChart = 0;
  // Chunks can arrive faster than the screen refreshes: draw what has piled up once per frame
  // (one layout per frame, however many chunks).
  let pending = [], frame = null;
  const flush = () => {
    frame = null;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
    for (const data of pending) appendChars(gen, data.text, data.steps);
    pending = [];
    if (atBottom) box.scrollTop = box.scrollHeight;
    if (Date.now() - lastChart > 700) { lastChart = Date.now(); updateNext(); }
  };
  try {
    await streamEvents(body, abort.signal, (name, data) => {
      if (name === "start") {
        state.streamId = data.stream;
        $("#strategy").textContent = `seed ${data.seed} · ${data.strategy}`;
      } else if (name === "chars") {
        pending.push(data);
        if (frame === null) frame = requestAnimationFrame(flush);
      } else if (name === "end") {
        const why = { length: "done: reached the length", "stop string": "done: ended on the stop string",
          stopped: "stopped", shutdown: "the server is shutting down", beam: "beam search: the most likely text",
          error: `failed: ${data.error || ""}` }[data.reason] || data.reason;
        $("#genstate").textContent = `${why} (${data.num_chars ?? generatedText().length} characters)`;
      }
    });
  } catch (e) {
    if (e.name === "AbortError") $("#genstate").textContent = "stopped";
    else { showError(e.message); $("#genstate").textContent = ""; }
  } finally {
    if (frame !== null) { cancelAnimationFrame(frame); flush(); }
    state.abort = null;
    state.streamId = null;
    setRunning(false);
    updateNext();
  }
}

async function stopGeneration() {
  const id = state.streamId, abort = state.abort;
  if (id) await api("/api/stop", { stream: id }).catch(() => {});
  // the server ends the stream with an "end" event; the abort only covers a server that went quiet
  setTimeout(() => abort && abort.abort(), 1500);
}

function setRunning(on) {
  $("#generate").disabled = on;
  $("#stopbtn").disabled = !on;
}

// the candidates of one step, in the side card (and a tooltip while hovering)
function stepTable(step, index) {
  const rows = step.top.map(([c, p]) => `<tr class="${c === step.c ? "chosen" : ""}"><td>${escapeHtml(show(c))}</td>
    <td style="width:100%"><div class="bar" style="width:${(100 * p).toFixed(1)}%"></div></td><td>${p.toFixed(3)}</td></tr>`);
  return { info: `step ${index + 1}: chose <b>${escapeHtml(show(step.c))}</b> with p = ${step.p.toFixed(3)}`, rows: rows.join("") };
}

function showStep(index, event) {
  const step = state.steps[index];
  if (!step) return;
  const { info, rows } = stepTable(step, index);
  $("#stepinfo").innerHTML = info;
  $("#steptable").innerHTML = rows;
  if (event) {
    const tip = $("#tip");
    tip.innerHTML = `${info}<table>${step.top.slice(0, 5).map(([c, p]) =>
      `<tr><td>${escapeHtml(show(c))}</td><td>${p.toFixed(3)}</td></tr>`).join("")}</table>`;
    tip.hidden = false;
    tip.style.left = `${Math.min(event.clientX + 14, window.innerWidth - 220)}px`;
    tip.style.top = `${event.clientY + 16}px`;
  }
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// ---------------------------------------------------------------------------------------------
// the next-character chart: reshaped as the settings move, no regeneration

let nextTimer = null, nextSeq = 0;
function updateNext() {
  clearTimeout(nextTimer);
  nextTimer = setTimeout(drawNext, 120);
}

async function drawNext() {
  if (!state.run) return;
  const seq = ++nextSeq;
  const context = ($("#prime").value + generatedText()).slice(-2000);
  const body = { run: state.run, context, ...decodingSettings() };
  try {
    const d = await api("/api/next", body);
    if (seq !== nextSeq) return;
    for (const id of ["temperature", "top_k", "top_p", "epsilon", "repetition_penalty", "greedy"]) {
      const box = $(`.err[data-for="${id}"]`);
      if (box && box.dataset.from === "next") { box.textContent = ""; delete box.dataset.from; $(`#${id}`).classList.remove("invalid"); }
    }
    $("#nextctx").textContent = `after “…${show(context.slice(-12)).replace(/\n/g, "↵")}” · ${d.strategy}`;
    const chart = $("#chart");
    const top = Math.min(16, d.chars.length);
    const scale = Math.max(d.model[0], ...d.sampling.slice(0, top), 1e-9);
    chart.innerHTML = "";
    for (let i = 0; i < top; i++) {
      const row = document.createElement("div");
      row.className = "crow";
      row.innerHTML = `<span>${escapeHtml(show(d.chars[i]))}</span><div class="cbar"><div class="m" style="width:${100 * d.model[i] / scale}%"></div>
        <div class="s" style="width:${100 * d.sampling[i] / scale}%"></div></div><span class="p">${d.sampling[i].toFixed(3)}</span>`;
      chart.appendChild(row);
    }
  } catch (e) {
    if (seq !== nextSeq) return;
    const field = fieldOf(e.message);
    if (field === "general" || field === "run" || field === "prime") { showError(e.message, field); return; }
    showError(e.message, field);
    $(`.err[data-for="${field}"]`).dataset.from = "next";
  }
}

// ---------------------------------------------------------------------------------------------
// compare: one prime and seed, several settings, streaming together

const COMPARE_DEFAULTS = [{ temperature: 0.4 }, { temperature: 1.0 }, { temperature: 1.0, top_k: 5 }];

function addCompareColumn(settings) {
  if (state.compare.length >= 4) return;
  const col = { id: state.compare.length, settings: { ...settings } };
  state.compare.push(col);
  renderCompare();
}

function renderCompare() {
  const box = $("#compare-settings");
  box.innerHTML = "";
  state.compare.forEach((col, i) => {
    const div = document.createElement("div");
    div.className = "cset";
    div.innerHTML = `<b>#${i + 1}</b><button class="x" type="button" title="remove">×</button>
      <label>T</label><input type="number" step="0.05" min="0" data-k="temperature" value="${col.settings.temperature ?? 0.8}">
      <label>top-k</label><input type="number" min="1" data-k="top_k" placeholder="off" value="${col.settings.top_k ?? ""}">
      <label>top-p</label><input type="number" step="0.05" min="0" max="1" data-k="top_p" placeholder="off" value="${col.settings.top_p ?? ""}">
      <div class="err"></div>`;
    div.querySelector(".x").onclick = () => { if (state.compare.length > 2) { state.compare.splice(i, 1); renderCompare(); } };
    div.querySelectorAll("input").forEach((input) => {
      input.oninput = () => {
        const v = input.value.trim();
        if (v === "") delete col.settings[input.dataset.k]; else col.settings[input.dataset.k] = Number(v);
      };
    });
    col.errBox = div.querySelector(".err");
    box.appendChild(div);
  });
  $("#addcol").disabled = state.compare.length >= 4;
}

async function compareAll() {
  clearErrors($("#tab-compare"));
  const out = $("#compare-out");
  out.innerHTML = "";
  const shared = { run: state.run, prime: $("#prime").value, length: num("length"), seed: num("seed") };
  const stop = $("#stop").value;
  if (stop) shared.stop = stop;
  const abort = new AbortController();
  state.compareAbort = abort;
  state.compareIds = [];
  $("#compare-go").disabled = true;
  $("#compare-stop").disabled = false;
  await Promise.all(state.compare.map(async (col, i) => {
    const wrap = document.createElement("div");
    const text = document.createElement("div");
    text.className = "text";
    const head = document.createElement("h4");
    head.textContent = `#${i + 1}`;
    wrap.append(head, text);
    out.appendChild(wrap);
    const prime = document.createElement("span");
    prime.className = "prime";
    prime.textContent = shared.prime;
    text.appendChild(prime);
    try {
      await streamEvents({ ...shared, ...col.settings }, abort.signal, (name, data) => {
        if (name === "start") { head.textContent = `#${i + 1} · ${data.strategy} · seed ${data.seed}`; state.compareIds.push(data.stream); }
        else if (name === "chars") text.appendChild(document.createTextNode(data.text));
      });
    } catch (e) {
      if (e.name !== "AbortError") { col.errBox.textContent = e.message; text.textContent = ""; }
    }
  }));
  state.compareAbort = null;
  $("#compare-go").disabled = false;
  $("#compare-stop").disabled = true;
}

async function compareStop() {
  await Promise.all((state.compareIds || []).map((id) => api("/api/stop", { stream: id }).catch(() => {})));
}

// ---------------------------------------------------------------------------------------------
// neurons

function cellButton(label, title, selected, pick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  if (selected) b.className = "sel";
  b.onclick = pick;
  return b;
}

// find: also ask for the cell finder's ranking (a second pass over the text); picking a listed
// unit re-colours without it and keeps the list.
async function colourNeurons(find = true) {
  clearErrors($("#tab-neurons"));
  const text = $("#neuron-text").value;
  const body = { run: state.run, text, layer: Number($("#layer").value), kind: $("#kind").value, unknown: "skip",
                 finder: find };
  const cell = num("cell");
  if (cell !== null) body.cell = cell;
  try {
    const d = await api("/api/neurons", body);
    $("#cell").value = d.cell;
    const cells = $("#topcells");
    cells.innerHTML = `<span class="muted small">layer ${d.layer + 1} ${d.kind} units that vary most:</span>`;
    for (const c of d.top_cells) {
      cells.appendChild(cellButton(`${c.cell}`, `spread ${c.spread}`, c.cell === d.cell,
                                   () => { $("#cell").value = c.cell; colourNeurons(false); }));
    }
    if (d.finder) {
      const finder = $("#finder");
      finder.innerHTML = "";
      for (const p of d.finder) {
        const line = document.createElement("div");
        line.innerHTML = '<span class="muted small"></span>';
        line.firstChild.textContent = `${p.property} (${p.statistic}, chance ${p.chance}):`;
        line.firstChild.title = p.description;
        for (const c of p.cells) {
          line.appendChild(cellButton(`${c.layer + 1}:${c.kind === "cell" ? "c" : "h"}:${c.cell}`,
                                      `${p.statistic} ${c.score} (best control ${p.control})`, false, () => {
            $("#layer").value = c.layer; $("#kind").value = c.kind; $("#cell").value = c.cell;
            colourNeurons(false);
          }));
        }
        finder.appendChild(line);
      }
    }
    const out = $("#neuron-out");
    out.innerHTML = "";
    const frag = document.createDocumentFragment();
    [...d.text].forEach((c, i) => {
      const v = Math.max(-1, Math.min(1, d.values[i]));
      const span = document.createElement("span");
      span.textContent = c;
      span.title = `${show(c)}: ${d.values[i].toFixed(3)}`;
      span.style.background = v >= 0 ? `rgba(220, 38, 38, ${Math.abs(v) * 0.75})` : `rgba(37, 99, 235, ${Math.abs(v) * 0.75})`;
      frag.appendChild(span);
    });
    out.appendChild(frag);
  } catch (e) { showError(e.message, "neurons"); }
}

// ---------------------------------------------------------------------------------------------
// wiring

function init() {
  syncOutputs();
  for (const id of ["temperature", "top_p", "epsilon", "repetition_penalty", "top_k"]) {
    $(`#${id}`).addEventListener("input", () => { syncOutputs(); updateNext(); });
  }
  for (const id of ["greedy", "use_beam"]) $(`#${id}`).addEventListener("change", () => { syncOutputs(); updateNext(); });
  $("#prime").addEventListener("input", () => { if (!state.abort) { resetOutput(); updateNext(); } });
  $("#run").addEventListener("change", (e) => pickRun(e.target.value));
  $("#generate").addEventListener("click", generate);
  $("#stopbtn").addEventListener("click", stopGeneration);
  $("#dice").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * 2 ** 31); });
  const gen = $("#output .gen");
  gen.addEventListener("mouseover", (e) => { if (e.target.dataset.i !== undefined) showStep(Number(e.target.dataset.i), e); });
  gen.addEventListener("mousemove", (e) => { if (e.target.dataset.i !== undefined) showStep(Number(e.target.dataset.i), e); });
  gen.addEventListener("mouseout", () => {
    $("#tip").hidden = true;
    if (state.pinned !== null) showStep(state.pinned);
  });
  gen.addEventListener("click", (e) => {
    if (e.target.dataset.i === undefined) return;
    $$("#output .gen span.sel").forEach((s) => s.classList.remove("sel"));
    e.target.classList.add("sel");
    state.pinned = Number(e.target.dataset.i);
    showStep(state.pinned);
  });
  $$(".tab").forEach((tab) => tab.addEventListener("click", () => {
    $$(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    $$(".panel").forEach((p) => p.classList.toggle("active", p.id === `tab-${tab.dataset.tab}`));
  }));
  COMPARE_DEFAULTS.forEach(addCompareColumn);
  $("#addcol").addEventListener("click", () => addCompareColumn({ temperature: 0.8 }));
  $("#compare-go").addEventListener("click", compareAll);
  $("#compare-stop").addEventListener("click", compareStop);
  $("#neuron-go").addEventListener("click", () => colourNeurons(true));
  $("#neuron-fill").addEventListener("click", () => { $("#neuron-text").value = ($("#prime").value + generatedText()).slice(0, 5000); });
  $("#neuron-text").value = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n";
  resetOutput();
  loadRuns();
}

init();
