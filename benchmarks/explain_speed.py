"""`charrnn explain` at scale: time and memory to explain a long text with a 2x512 LSTM.

Measured in one run, on the same text and model (random weights: the work does not depend on them):

  forward    the baseline: `scoring.score_text`, the model's own chunked forward over the text
             (the least any per-position view must cost)
  internals  `internals.iter_internals` alone: every layer's h, c and gates at every step
  explain    `explain.explain`: internals + predictions/top-k + the cell finder over every cell and
             property (with the shifted controls) + gate saturation + the lens
  page       `explain_page.write_explanation`: the HTML page and the figures

It prints seconds, characters per second and each stage's ratio to the forward pass, the peak
resident memory (ru_maxrss) of the process and what holding every cell's activation for the whole
text would take (positions x cells x 4 bytes), and the page's size.

    OMP_NUM_THREADS=2 python benchmarks/explain_speed.py              # 100,000 characters, 2x512
    python benchmarks/explain_speed.py --chars 5000 --hidden 64       # a quick smoke run
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charrnn.config import ModelConfig  # noqa: E402
from charrnn.explain import explain  # noqa: E402
from charrnn.explain_page import write_explanation  # noqa: E402
from charrnn.internals import iter_internals  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.scoring import score_text  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402


def corpus(chars: int) -> str:
    """Play-like text with speaker lines, quotes and brackets (65 distinct characters or fewer)."""
    rng = random.Random(0)
    words = "the old king sees a young queen and she loves his bright sword in the quiet garden of verona".split()
    out: list[str] = []
    size = 0
    while size < chars:
        line = rng.choice(["ROMEO", "JULIET", "NURSE"]) + ":\n" + " ".join(rng.choice(words) for _ in range(12))
        line += (' "' + rng.choice(words) + '"' if rng.random() < 0.3 else "") + " (" + rng.choice(words) + ").\n\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:chars]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=None, help="characters per chunk  [default: the library's]")
    args = parser.parse_args()
    text = corpus(args.chars)
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=64, hidden_size=args.hidden,
                                num_layers=args.layers)).eval()
    ids = vocab.encode(text)
    cells = args.layers * 2 * args.hidden
    print(f"{args.layers}x{args.hidden} LSTM, {len(text):,} characters, {cells:,} cells, "
          f"torch threads {torch.get_num_threads()}")
    base_mb = peak_mb()
    times = {}
    peaks = {}
    t = time.perf_counter()
    score_text(model, vocab, text)
    times["forward"] = time.perf_counter() - t
    peaks["forward"] = peak_mb()
    t = time.perf_counter()
    chunk = {"chunk": args.chunk} if args.chunk else {}
    for _ in iter_internals(model, ids, **chunk):
        pass
    times["internals"] = time.perf_counter() - t
    peaks["internals"] = peak_mb()
    t = time.perf_counter()
    result = explain(model, vocab, text, cells=["1:c:0"], **chunk)
    times["explain"] = time.perf_counter() - t
    peaks["explain"] = peak_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        written = write_explanation(result, tmp)
        times["page"] = time.perf_counter() - t
        peaks["page"] = peak_mb()
        page_mb = written["html"].stat().st_size / 1e6
    for name, seconds in times.items():
        print(f"  {name:<10} {seconds:7.1f} s  {len(text) / seconds:9,.0f} chars/s  "
              f"{seconds / times['forward']:5.2f}x the forward pass   peak RSS by then {peaks[name]:,.0f} MB")
    total = times["explain"] + times["page"]
    print(f"explain + page: {total:.1f} s; peak RSS {peak_mb():,.0f} MB (after loading: {base_mb:,.0f} MB); "
          f"every cell for the whole text as float32 would be {len(text) * cells * 4 / 1e6:,.0f} MB; "
          f"page {page_mb:.1f} MB; shown cells {len(result.cells)}")
    print("finder:", "; ".join(f"{r.name} {r.best.cell} {r.best.score:.3f}" for r in result.finder if r.best))
    np.testing.assert_equal(len(result.predictions.prob), len(text))


if __name__ == "__main__":
    main()
