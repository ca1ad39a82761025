"""How long a default temperature sweep takes, and what indexing the training text once buys.

    python benchmarks/sweep_speed.py [-c RUN] [--baseline-samples 8]

Runs `charrnn.sweep.run` with the default settings on a checkpoint (default: the most recent run)
and prints the time of each stage. Then it scores the first N samples twice for copying (the share
of 10-grams found in the training text and the longest copied substring): once with the suffix-array
index the sweep builds, once by rescanning the corpus (`fragment in corpus`) as a sweep without an
index would. Both must give the same numbers; the ratio is the point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from charrnn import checkpoint, metrics, sweep
from charrnn.data import read_text


def rescan_match_lengths(text: str, corpus: str) -> list[int]:
    """Matching statistics by searching the corpus string for every candidate extension."""
    lengths, length = [], 0
    for i in range(len(text)):
        length = max(length - 1, 0)
        while i + length < len(text) and text[i:i + length + 1] in corpus:
            length += 1
        lengths.append(length)
    return lengths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", type=Path, default=None)
    parser.add_argument("--baseline-samples", type=int, default=8)
    args = parser.parse_args()
    run_dir = args.checkpoint or checkpoint.find_latest("checkpoints")
    started = time.perf_counter()
    ckpt = checkpoint.load(run_dir)
    corpus = read_text(sweep.corpus_path(ckpt.meta))
    load_s = time.perf_counter() - started
    result = sweep.run(ckpt.model, ckpt.vocab, corpus, sweep.SweepConfig())
    t = result.timings
    cfg = result.config
    print(f"checkpoint {ckpt.path}, corpus {len(corpus):,} chars")
    print(f"default sweep: {len(cfg.settings)} settings x {cfg.num_samples} samples x {cfg.length} chars")
    print(f"  load {load_s:.1f}s, index {t['index_s']:.1f}s, sample {t['generate_s']:.1f}s, "
          f"metrics {t['metrics_s']:.1f}s, total {load_s + t['run_s']:.1f}s (plots and report not included)")

    index = metrics.CorpusIndex(corpus)
    texts = [s["text"] for s in result.samples if s["setting"] != sweep.GREEDY][:args.baseline_samples]
    t0 = time.perf_counter()
    indexed = [metrics.match_lengths(text, index) for text in texts]
    indexed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rescanned = [rescan_match_lengths(text, corpus) for text in texts]
    rescan_s = time.perf_counter() - t0
    if indexed != rescanned:
        print("MISMATCH: the index and the rescan disagree", file=sys.stderr)
        return 1
    print(f"copy metrics for {len(texts)} samples: indexed {indexed_s:.3f}s, rescanning the corpus {rescan_s:.2f}s "
          f"-> index {rescan_s / indexed_s:.0f}x faster (identical results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
