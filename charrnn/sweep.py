"""The temperature sweep: sample one model at many temperatures and measure the spectrum.

Karpathy's observation, measured: near T=0 a char model falls into loops, around T=0.5 it is
confident and readable, and at high T it invents words. `run` samples every temperature with the
same seed and prime (batched across samples), scores every sample with `metrics` against the
training text indexed once, aggregates per temperature and checks the spectrum's properties.
`sweep` does the same from a checkpoint and writes samples, CSV/JSON, plots and a report
(sweep_output: the files and the terminal summary, whose names are importable from here too).
"""

from __future__ import annotations

import math
import os
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from . import metrics
from .errors import CharRNNError

DEFAULT_TEMPERATURES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0)
MAX_TEMPERATURE = 100.0
GREEDY = "greedy"

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MetricInfo:
    """How one per-sample metric is named, labelled and printed."""

    key: str
    title: str
    unit: str
    fmt: str = "{:.3f}"


# Per-sample metrics, in the order of the plots and tables.
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("repeated_ngram_share", f"Repetition: repeated {metrics.REPEAT_N}-grams", "share of the sample's n-grams"),
    MetricInfo("distinct_ngram_ratio", f"Distinct-{metrics.REPEAT_N}", "distinct / all n-grams"),
    MetricInfo("compression_ratio", "zlib compression ratio", "UTF-8 bytes / compressed bytes", "{:.2f}"),
    MetricInfo("loop", "Ends in an exact loop", "share of samples", "{:.2f}"),
    MetricInfo("invented_word_share", "Invented words", "share of words not in the training text"),
    MetricInfo("copied_ngram_share", f"Copying: {metrics.COPY_N}-grams found in the training text",
               "share of the sample's n-grams"),
    MetricInfo("longest_copy", "Longest substring copied from the training text", "characters", "{:.0f}"),
    MetricInfo("entropy", "Entropy of the sampling distribution", "nats/char"),
    MetricInfo("nll", "NLL of the sample under the model (T=1)", "nats/char"),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


# sample.MAX_KEPT, the most characters a batch of samples holds (sample.py imports torch; this must not,
# since the CLI builds a SweepConfig for its --help defaults).
MAX_SAMPLED = 100_000_000
MIN_TREND_TEMPERATURES = 3  # a rank correlation of fewer points shows no trend (two always rank +-1)


@dataclass(frozen=True)
class SweepConfig:
    """What to sample: temperatures (plus greedy), samples per temperature, their length, seed, prime."""

    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    greedy: bool = True  # also decode greedily (one sample: argmax ignores the seed)
    num_samples: int = 8
    length: int = 1000
    seed: int = 0  # sample i uses seed + i, at every temperature
    prime: str = ""

    def __post_init__(self) -> None:
        temps = tuple(self.temperatures)
        for t in temps:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= MAX_TEMPERATURE:
                raise CharRNNError(f"temperatures must be numbers in (0, {MAX_TEMPERATURE:g}], got {t!r}")
        if len(set(temps)) != len(temps):
            repeated = next(t for t in temps if temps.count(t) > 1)
            raise CharRNNError(f"temperatures must not repeat: {repeated:g} is given more than once")
        if not temps and not self.greedy:
            raise CharRNNError("nothing to sample: give temperatures or keep greedy")
        temps = tuple(sorted(float(t) for t in temps))
        # A setting is known by its label in the summary, the tables and samples/<label>.txt: two
        # temperatures sharing one would merge their rows and overwrite each other's samples.
        for low, high in pairwise(temps):
            if label(low) == label(high):
                raise CharRNNError(f"temperatures {low!r} and {high!r} would both be reported as {label(low)}; "
                                   "give temperatures that differ in their first 6 significant digits")
        object.__setattr__(self, "temperatures", temps)
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or not 1 <= self.num_samples <= 10_000:
            raise CharRNNError(f"number of samples must be in 1..10000, got {self.num_samples!r}")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or not 1 <= self.length <= 1_000_000:
            raise CharRNNError(f"length must be in 1..1000000, got {self.length!r}")
        if self.num_samples * self.length > MAX_SAMPLED:  # said before any work, not after the first setting
            raise CharRNNError(f"{self.num_samples:,} samples of {self.length:,} characters per temperature are "
                               f"absurdly many to keep in memory (at most {MAX_SAMPLED:,} characters)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise CharRNNError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.prime, str):
            raise CharRNNError("prime must be text")

    @property
    def settings(self) -> list[str]:
        """Labels of the decodings, greedy first: 'greedy', 'T=0.1', ..."""
        return ([GREEDY] if self.greedy else []) + [label(t) for t in self.temperatures]


def label(temperature: float | None) -> str:
    """'greedy' for None or 0, else 'T=<temperature>'."""
    return GREEDY if not temperature else f"T={temperature:g}"


def parse_temperatures(text: str) -> tuple[float, ...]:
    """'0.1,0.5,1' -> (0.1, 0.5, 1.0); raises CharRNNError naming the bad item."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise CharRNNError(f"cannot read temperature {item!r}; give numbers like 0.1,0.5,1.0") from None
        if not math.isfinite(value) or not 0 < value <= MAX_TEMPERATURE:
            raise CharRNNError(f"temperature {item} is out of range (0, {MAX_TEMPERATURE:g}]; "
                               "greedy decoding is included by default")
        values.append(value)
    if not values:
        raise CharRNNError("no temperatures given")
    return tuple(values)


@dataclass(frozen=True)
class Check:
    """One property of the spectrum and whether this sweep shows it."""

    name: str
    requirement: str
    value: float | None
    passed: bool
    detail: str = ""


@dataclass
class SweepResult:
    """Everything a sweep measured. `samples` holds the texts; the rest is plain JSON data."""

    config: SweepConfig
    samples: list[dict[str, Any]]  # per sample: setting, temperature, index, seed, text
    rows: list[dict[str, Any]]  # per sample: setting, temperature, index, seed + every metric
    summary: list[dict[str, Any]]  # per setting: mean/std/min/max of every metric
    correlations: dict[str, float]  # Spearman rho of each metric's mean against temperature
    checks: list[Check]
    source: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    command: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def setting(self, name: str) -> dict[str, Any]:
        """The summary row of one setting ('greedy', 'T=2')."""
        for row in self.summary:
            if row["setting"] == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (no sample texts; those go to samples.jsonl)."""
        return {
            "config": asdict(self.config),
            "source": self.source,
            "command": self.command,
            "metrics": [asdict(m) for m in METRICS],
            "summary": self.summary,
            "correlations": self.correlations,
            "checks": [asdict(c) for c in self.checks],
            "passed": self.passed,
            "timings": self.timings,
            "samples": self.rows,
        }


def score(text: str, index: metrics.CorpusIndex) -> dict[str, Any]:
    """Every text metric of one sample against the indexed training text."""
    lengths = metrics.match_lengths(text, index)
    loop = metrics.trailing_loop(text)
    return {
        "chars": len(text),
        "words": len(metrics.words(text)),
        "repeated_ngram_share": metrics.repeated_ngram_share(text),
        "distinct_ngram_ratio": metrics.distinct_ngram_ratio(text),
        "compression_ratio": metrics.compression_ratio(text),
        "loop": loop is not None,
        "loop_period": loop.period if loop else 0,
        "loop_start": loop.start if loop else None,
        "invented_word_share": metrics.invented_word_share(text, index.words),
        "copied_ngram_share": metrics.copied_ngram_share(text, index, lengths=lengths),
        "longest_copy": max(lengths, default=0),
        "longest_copy_text": metrics.longest_copy(text, index, lengths=lengths),
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize(rows: Sequence[dict[str, Any]], settings: Sequence[str]) -> list[dict[str, Any]]:
    """Aggregate per-sample rows into one row per setting: mean, std, min and max of each metric."""
    summary = []
    for name in settings:
        group = [r for r in rows if r["setting"] == name]
        if not group:
            continue
        summary.append({
            "setting": name,
            "temperature": group[0]["temperature"],
            "greedy": name == GREEDY,
            "num_samples": len(group),
            "loop_periods": [r["loop_period"] for r in group],
            "metrics": {key: _spread([r[key] for r in group]) for key in METRIC_KEYS},
        })
    return summary


def correlations(summary: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Spearman rho between temperature and each metric's mean, over the sampled temperatures (not greedy)."""
    sampled = [row for row in summary if not row["greedy"]]
    temps = [row["temperature"] for row in sampled]
    return {key: metrics.spearman(temps, [row["metrics"][key]["mean"] for row in sampled]) for key in METRIC_KEYS}


def check_spectrum(summary: Sequence[dict[str, Any]], rhos: dict[str, float], *, min_rho: float = 0.9,
                   high_temperature: float = 2.0, min_invented: float = 1 / 3) -> list[Check]:
    """The properties of Karpathy's spectrum: repetition falls and invention rises with T,
    greedy ends in a loop, and the high temperature invents at least a third of its words."""
    checks = []
    rep, inv = rhos.get("repeated_ngram_share", math.nan), rhos.get("invented_word_share", math.nan)
    sampled = sum(1 for row in summary if not row["greedy"])
    if sampled < MIN_TREND_TEMPERATURES:  # two points always rank +-1 (or tie): no trend can be shown
        detail = too_few_temperatures(sampled)
        checks.append(Check("repetition falls with temperature", f"Spearman rho <= -{min_rho:g}", None, False, detail))
        checks.append(Check("invention rises with temperature", f"Spearman rho >= {min_rho:g}", None, False, detail))
    else:
        checks.append(Check("repetition falls with temperature", f"Spearman rho <= -{min_rho:g}", _finite(rep),
                            math.isfinite(rep) and rep <= -min_rho,
                            f"rho = {rep:+.3f} (repeated {metrics.REPEAT_N}-gram share)"))
        checks.append(Check("invention rises with temperature", f"Spearman rho >= {min_rho:g}", _finite(inv),
                            math.isfinite(inv) and inv >= min_rho, f"rho = {inv:+.3f} (invented-word share)"))
    greedy = [row for row in summary if row["greedy"]]
    if greedy:
        periods = [p for p in greedy[0]["loop_periods"] if p]
        checks.append(Check("greedy decoding ends in a loop", "an exact cycle at the end of the sample",
                            float(periods[0]) if periods else None, bool(periods),
                            f"period {periods[0]} chars" if periods else "no cycle found; try a longer --length"))
    else:
        checks.append(Check("greedy decoding ends in a loop", "an exact cycle at the end of the sample", None, False,
                            "greedy was not sampled"))
    high = [row for row in summary if not row["greedy"] and math.isclose(row["temperature"], high_temperature)]
    name = f"T={high_temperature:g} invents at least {min_invented:.0%} of words"
    if high:
        share = high[0]["metrics"]["invented_word_share"]["mean"]
        checks.append(Check(name, f"invented-word share >= {min_invented:.3f}", share, share >= min_invented,
                            f"{share:.1%} of words invented"))
    else:
        checks.append(Check(name, f"invented-word share >= {min_invented:.3f}", None, False,
                            f"T={high_temperature:g} was not sampled"))
    return checks


def too_few_temperatures(sampled: int) -> str:
    return (f"needs at least {MIN_TREND_TEMPERATURES} temperatures to show a trend, "
            f"got {sampled}")


def unmet_check_needs(config: SweepConfig, *, high_temperature: float = 2.0) -> list[str]:
    """What `check_spectrum` needs that `config` does not sample (empty when every check can pass):
    a front end refuses --check with these before sampling instead of reporting FAILs after it."""
    needs = []
    if len(config.temperatures) < MIN_TREND_TEMPERATURES:
        needs.append(f"at least {MIN_TREND_TEMPERATURES} temperatures (got {len(config.temperatures)}) "
                     "to show repetition falling and invention rising")
    if not config.greedy:
        needs.append("greedy decoding (drop --no-greedy) to show it ends in a loop")
    if not any(math.isclose(t, high_temperature) for t in config.temperatures):
        needs.append(f"T={high_temperature:g} among the temperatures to show it invents words")
    return needs


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run(model: Any, vocab: Any, corpus_text: str, config: SweepConfig | None = None, *,
        index: metrics.CorpusIndex | None = None, on_progress: Progress | None = None,
        source: dict[str, Any] | None = None) -> SweepResult:
    """Sample `model` at every setting of `config` and measure each sample against `corpus_text`.

    Every temperature uses the same seed and prime, so the settings differ only in temperature.
    Pass a prebuilt `index` of `corpus_text` to reuse it across sweeps.
    """
    from .sample import Decoding, generate_batch

    config = config or SweepConfig()
    progress = on_progress or (lambda event: None)
    unknown = vocab.unknown(config.prime)
    if unknown:
        raise CharRNNError(f"the prime has characters the model never saw: {''.join(unknown)!r}")
    started = time.perf_counter()
    if index is None:
        progress({"event": "index", "chars": len(corpus_text)})
        index = metrics.CorpusIndex(corpus_text)
    index_s = time.perf_counter() - started
    generate_s = score_s = 0.0
    samples: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    settings = config.settings
    for number, name in enumerate(settings, 1):
        greedy = name == GREEDY
        temperature = 0.0 if greedy else config.temperatures[number - 1 - int(config.greedy)]
        decoding = Decoding(greedy=True) if greedy else Decoding(temperature=temperature)
        t0 = time.perf_counter()
        batch = generate_batch(model, vocab, config.length, num_samples=1 if greedy else config.num_samples,
                               prime=config.prime, decoding=decoding, seed=config.seed)
        t1 = time.perf_counter()
        for i, s in enumerate(batch):
            base = {"setting": name, "temperature": temperature, "index": i, "seed": s.seed}
            samples.append({**base, "text": s.text})
            rows.append({**base, **score(s.text, index), "entropy": s.entropy, "nll": s.nll})
        t2 = time.perf_counter()
        generate_s += t1 - t0
        score_s += t2 - t1
        progress({"event": "setting", "setting": name, "number": number, "total": len(settings),
                  "seconds": t2 - t0})
    summary = summarize(rows, settings)
    rhos = correlations(summary)
    return SweepResult(config=config, samples=samples, rows=rows, summary=summary, correlations=rhos,
                       checks=check_spectrum(summary, rhos), source=dict(source or {}),
                       timings={"index_s": index_s, "generate_s": generate_s, "metrics_s": score_s,
                                "run_s": time.perf_counter() - started})


# ----------------------------------------------------------------------------------------------
# From a checkpoint to a folder of results


def command_line(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, config: SweepConfig,
                 corpus: str | os.PathLike | None = None, encoding: str = "utf-8") -> str:
    """The exact `charrnn sweep` command that regenerates a sweep."""
    parts = ["charrnn", "sweep", "-c", str(checkpoint), "--out", str(out_dir),
             "--temperatures", ",".join(_exact(t) for t in config.temperatures),
             "--num-samples", str(config.num_samples), "--length", str(config.length), "--seed", str(config.seed)]
    if config.prime:
        parts += ["--prime", config.prime]
    if not config.greedy:
        parts.append("--no-greedy")
    if corpus is not None:
        parts += ["--corpus", str(corpus)]
    if encoding != "utf-8":
        parts += ["--encoding", encoding]
    return " ".join(shlex.quote(p) for p in parts)


def _exact(temperature: float) -> str:
    """The short form (0.5, 2) where it is exact, else every digit: the command must give back the same value."""
    short = f"{temperature:g}"
    return short if float(short) == temperature else repr(float(temperature))


def _recorded_corpus(meta: dict[str, Any]) -> dict[str, Any]:
    """What the metadata records about the training text, keeping only entries of the types charrnn writes.

    `checkpoint.load` refuses metadata with mistyped corpus entries; this also guards metadata given
    directly, so a forged entry reads as not recorded instead of failing deep inside a path call.
    """
    corpus = meta.get("corpus") if isinstance(meta, dict) else None
    if not isinstance(corpus, dict):
        return {}
    kept = {key: corpus[key] for key in ("path", "name", "sha256") if isinstance(corpus.get(key), str)}
    inputs = corpus.get("inputs")
    if isinstance(inputs, list) and all(isinstance(p, str) for p in inputs):
        kept["inputs"] = inputs
    return kept


def corpus_path(meta: dict[str, Any], override: str | os.PathLike | None = None) -> Path:
    """The training text: `override` ("-" is standard input), else the path recorded in the checkpoint's metadata."""
    from .data import STDIN_NAME

    if override is not None:
        return Path(override)
    recorded = _recorded_corpus(meta)
    if not recorded.get("path"):
        raise CharRNNError("the checkpoint does not record its training text; pass --corpus FILE")
    if recorded["path"] == STDIN_NAME:
        raise CharRNNError("the checkpoint was trained on standard input; pass --corpus FILE, or pipe the text "
                           "again with --corpus -")
    path = Path(recorded["path"])
    if path.is_dir() or len(recorded.get("inputs", [])) > 1:
        raise CharRNNError(f"the checkpoint was trained on several files ({path}); pass --corpus FILE with "
                           "their text joined in one file")
    if not path.is_file():
        raise CharRNNError(f"the checkpoint's training text {path} is not there any more; pass --corpus FILE")
    return path


def sweep(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, config: SweepConfig | None = None, *,
          corpus: str | os.PathLike | None = None, encoding: str = "utf-8", device: str = "cpu",
          command: str | None = None, on_progress: Progress | None = None) -> SweepResult:
    """Load a checkpoint, sweep it, and write samples, metrics, plots and report into `out_dir`.

    `encoding` is that of the training text the samples are compared with."""
    from . import checkpoint as ckpt_io
    from . import sweep_output
    from .corpus_cache import sha256_text
    from .data import STDIN_NAME, is_stdin, read_text
    from .runtime import resolve_device

    started = time.perf_counter()
    config = config or SweepConfig()
    progress = on_progress or (lambda event: None)
    ckpt = ckpt_io.load(checkpoint, resolve_device(device))
    text_path = corpus_path(ckpt.meta, corpus)
    text = read_text(text_path, encoding=encoding)
    shown = STDIN_NAME if is_stdin(text_path) else str(text_path)
    recorded = _recorded_corpus(ckpt.meta)
    sha = sha256_text(text)
    if corpus is None and recorded.get("sha256") and recorded["sha256"] != sha:
        progress({"event": "warning", "message": f"{shown} changed since training (sha256 differs)"})
    mc = ckpt.model.config
    source = {
        "checkpoint": str(ckpt.path),
        "model": f"{mc.num_layers}x{mc.hidden_size} {mc.model.upper()}",
        "parameters": sum(p.numel() for p in ckpt.model.parameters()),
        "best_val_loss": ckpt.meta.get("best_val_loss"),
        "step": ckpt.meta.get("step"),
        "train_seconds": ckpt.meta.get("elapsed"),
        "corpus": shown,
        "corpus_name": recorded.get("name") or Path(shown).name,
        "corpus_chars": len(text),
        "corpus_sha256": sha,
        "corpus_matches_training": (recorded.get("sha256") == sha) if recorded.get("sha256") else None,
    }
    result = run(ckpt.model, ckpt.vocab, text, config, on_progress=progress, source=source)
    result.command = command or command_line(checkpoint, out_dir, config, corpus, encoding)
    sweep_output.write(result, out_dir)
    result.timings["total_s"] = time.perf_counter() - started
    # Once more with the total time, which includes drawing the figures (cheap next to sampling).
    sweep_output.write_json(Path(out_dir) / "metrics.json", result.to_dict())
    sweep_output.write_report(result, Path(out_dir))
    return result


_IN_SWEEP_OUTPUT = ("write", "format_summary", "excerpt", "spectrum_picks", "sample_file_name")


def __getattr__(name: str) -> Any:
    """The writing and reporting moved to sweep_output (which imports this module, so the names are
    looked up when asked for); `sweep.write` and the rest keep working."""
    if name in _IN_SWEEP_OUTPUT:
        from . import sweep_output

        return getattr(sweep_output, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
