"""Before/after for the one-decoding-chain change: the library's sampling now against a copy of the
library as it was, in one process, interleaved, same weights (a shared machine moves absolute
figures; the ratio within a round is what to read).

    git archive <old commit> charrnn | tar -x -C /tmp/old && mv /tmp/old/charrnn /tmp/old/charrnn_old
    python benchmarks/decoding_ab.py --old /tmp/old [--rounds 7]

Times `generate_batch` (warm-up, steps, decoding, statistics) at batch 1 (plain T=0.8, and
top-k + top-p + penalty) and batch 64, in characters per CPU-second of the process (one thread).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="folder holding the old library as package charrnn_old")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default="2x256", help="LAYERSxHIDDEN")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, args.old)
    libs = {name: (importlib.import_module(f"{pkg}.model"), importlib.import_module(f"{pkg}.config"),
                   importlib.import_module(f"{pkg}.sample"), importlib.import_module(f"{pkg}.vocab"))
            for name, pkg in (("before", "charrnn_old"), ("after", "charrnn"))}
    layers, hidden = (int(x) for x in args.model.split("x"))
    torch.manual_seed(0)
    models, vocabs = {}, {}
    state = None
    for name, (model_mod, config_mod, _, vocab_mod) in libs.items():
        vocabs[name] = vocab_mod.Vocab([chr(c) for c in range(32, 96)] + ["\n"])
        model = model_mod.CharRNN(config_mod.ModelConfig(vocab_size=65, embed_dim=64, hidden_size=hidden,
                                                         num_layers=layers, dropout=0.0)).eval()
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        models[name] = model
    cases = {"b1 T=0.8": (1, 2000, {"temperature": 0.8}),
             "b1 top-k+top-p+rep": (1, 1000, {"temperature": 0.8, "top_k": 20, "top_p": 0.9,
                                              "repetition_penalty": 1.3}),
             "b64 T=0.8": (64, 100, {"temperature": 0.8})}
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for case, (batch, steps, options) in cases.items():
            for name, (_, _, sample_mod, _) in libs.items():
                decoding = sample_mod.Decoding(**options)
                time.sleep(0.2)
                start = time.process_time()
                sample_mod.generate_batch(models[name], vocabs[name], steps, num_samples=batch, decoding=decoding,
                                          seed=1, prime="AB")
                rates.setdefault((case, name), []).append(batch * steps / (time.process_time() - start))
    print(f"{args.model}, 1 thread, chars per CPU-second, best of {args.rounds} rounds; paired = median of the "
          "after/before ratio within a round")
    print(f"{'case':<22} {'before':>10} {'after':>10} {'best ratio':>11} {'paired':>8}")
    for case in cases:
        b, a = rates[(case, "before")], rates[(case, "after")]
        paired = statistics.median(x / y for x, y in zip(a, b, strict=True))
        print(f"{case:<22} {max(b):>10,.0f} {max(a):>10,.0f} {max(a) / max(b):>10.2f}x {paired:>7.2f}x")


if __name__ == "__main__":
    main()
