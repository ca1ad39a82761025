"""Sampling speed: charrnn's generation against baselines implemented here, measured in one run.

For each model size and thread count it times, in characters per second (chars generated, all
samples together, divided by wall time; sampling included):

  batch 1   charrnn        the library: `generate_batch` (step engine + NumPy decoding chain)
            numpy_minimal  a straightforward NumPy LSTM step (x@W_ih.T + h@W_hh.T + b, sigmoid,
                           tanh) + softmax + inverse-CDF draw: the floor the issue names
            torch_eager    `CharRNN.forward` (nn.LSTM) one step at a time under no_grad, default
                           settings (oneDNN on) + softmax + torch.multinomial
            torch_nomkl    the same with oneDNN switched off (for reference)
            matmul_floor   only the float32 weight products of charrnn's step (the recurrent
                           matmuls and the head; no gates, no draw): an upper bound on any exact
                           float32 step here, since at batch 1 reading the weights is the cost
  batch 64  charrnn        the library with num_samples=64 (hidden states stacked)
            numpy_batched  the minimal NumPy step on 64 rows
            torch_onednn   nn.LSTM on 64 rows, oneDNN on (its default and fastest torch path here)

and prints the issue's ratios: batch 1 charrnn / numpy_minimal (>= 1) and charrnn / torch_eager
(>= 10); batch 64 charrnn / the faster baseline (>= 0.9). Ratios are of each variant's best
round (other programs can only slow a run down, so the best round is the closest to the machine's
own speed, as `timeit` reasons); "paired" is the median over rounds of the ratio within a round,
printed to show how much the machine's load moved the figures while it ran. With one thread the
ratios use characters per CPU-second of the process (its run time minus the moments another
program held the core, which on a shared machine is the steadier figure); with two, wall clock. It also times the decoding chain alone
(softmax, draw and bookkeeping for one step at batch 1) in NumPy and in torch.

Every baseline is checked to produce the torch model's logits before it is timed. Each thread
count runs in its own process (OpenBLAS reads its thread count at start-up); variants are timed
round-robin, after a pause that lets the previous variant's BLAS/OpenMP threads go idle, and the
best of --repeats is kept, so a burst of load from elsewhere hits all alike.

    python benchmarks/sample_speed.py            # full run, ~4 minutes on 2 idle cores
    python benchmarks/sample_speed.py --smoke    # a few seconds: tiny model, one thread count
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from charrnn.config import ModelConfig
from charrnn.decoding import Chooser, Statistics
from charrnn.engine import NumpyEngine, prefers_torch
from charrnn.model import CharRNN
from charrnn.sample import Decoding, generate_batch
from charrnn.vocab import Vocab

TEMPERATURE = 0.8
SETTLE_S = 0.3
VOCAB = Vocab([chr(c) for c in range(32, 32 + 64)] + ["\n"])  # 65 characters, like tiny Shakespeare


@contextlib.contextmanager
def onednn_disabled() -> Iterator[None]:
    """oneDNN off for the torch_nomkl reference only. It is a process-wide switch, which is why the
    library never flips it (generations may run in several threads); this benchmark is one thread."""
    previous = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(previous)


def make_model(layers: int, hidden: int, embed: int = 64) -> CharRNN:
    torch.manual_seed(0)  # speed does not depend on the weights; random ones are fine
    return CharRNN(ModelConfig(vocab_size=len(VOCAB), embed_dim=embed, hidden_size=hidden, num_layers=layers,
                               dropout=0.0)).eval()


# ----------------------------------------------------------------------------------------------
# baselines


class MinimalNumpy:
    """The NumPy LSTM step anyone would write first, with the same weights as the model."""

    def __init__(self, model: CharRNN, batch: int):
        sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        self.layers, self.hidden = model.config.num_layers, model.config.hidden_size
        self.embed = sd["embed.weight"]
        self.w_ih = [sd[f"rnn.weight_ih_l{i}"] for i in range(self.layers)]
        self.w_hh = [sd[f"rnn.weight_hh_l{i}"] for i in range(self.layers)]
        self.b = [sd[f"rnn.bias_ih_l{i}"] + sd[f"rnn.bias_hh_l{i}"] for i in range(self.layers)]
        self.w_out, self.b_out = sd["head.weight"], sd["head.bias"]
        self.h = [np.zeros((batch, self.hidden), np.float32) for _ in range(self.layers)]
        self.c = [np.zeros((batch, self.hidden), np.float32) for _ in range(self.layers)]
        self.rng = np.random.default_rng(0)

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    def logits(self, ids: np.ndarray) -> np.ndarray:
        H = self.hidden
        x = self.embed[ids]
        for i in range(self.layers):
            g = x @ self.w_ih[i].T + self.h[i] @ self.w_hh[i].T + self.b[i]
            gi, gf = self.sigmoid(g[:, :H]), self.sigmoid(g[:, H : 2 * H])
            gg, go = np.tanh(g[:, 2 * H : 3 * H]), self.sigmoid(g[:, 3 * H :])
            self.c[i] = gf * self.c[i] + gi * gg
            self.h[i] = go * np.tanh(self.c[i])
            x = self.h[i]
        return x @ self.w_out.T + self.b_out

    def step(self, ids: np.ndarray) -> np.ndarray:
        z = self.logits(ids) / TEMPERATURE
        p = np.exp(z - z.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        u = self.rng.random(len(ids)) * cdf[:, -1]
        return np.minimum((cdf <= u[:, None]).sum(axis=1), p.shape[1] - 1)


class EagerTorch:
    """`CharRNN.forward` (embedding -> nn.LSTM -> head) one step at a time, + softmax + multinomial."""

    def __init__(self, model: CharRNN, batch: int, onednn: bool = True):
        self.model, self.onednn = model, onednn
        self.hidden = model.init_hidden(batch)
        torch.manual_seed(0)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        with contextlib.nullcontext() if self.onednn else onednn_disabled():
            out, self.hidden = self.model(ids, self.hidden)
        return out[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.logits(ids) / TEMPERATURE, dim=-1)
        return torch.multinomial(probs, 1)


def check_baselines(model: CharRNN) -> None:
    """Same weights, same output: every baseline's logits equal the model's on a short text."""
    ids = torch.randint(0, len(VOCAB), (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(ids)
    numpy_minimal, eager = MinimalNumpy(model, 3), EagerTorch(model, 3, onednn=True)
    engine = NumpyEngine(model, 3)
    for t in range(ids.shape[1]):
        for name, got in (("numpy_minimal", numpy_minimal.logits(ids[:, t].numpy())),
                          ("torch_eager", eager.logits(ids[:, t : t + 1]).numpy()),
                          ("charrnn engine", engine.step(ids[:, t].numpy()))):
            np.testing.assert_allclose(got, expected[:, t].numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


# ----------------------------------------------------------------------------------------------
# timing


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one run."""
    # Let the previous variant's worker threads go idle first: OpenBLAS threads spin for a while
    # after a call and would steal the core torch's OpenMP threads need (and the reverse).
    time.sleep(SETTLE_S)
    start, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - cpu


def variants(model: CharRNN, batch: int, steps: int, slow_steps: int) -> dict[str, tuple[Callable[[], None], int]]:
    """name -> (a function generating `steps` characters per row, characters it produces)."""

    def charrnn(backend: str = "auto") -> Callable[[], None]:
        def run() -> None:
            generate_batch(model, VOCAB, steps, num_samples=batch, decoding=Decoding(temperature=TEMPERATURE), seed=1,
                           backend=backend)
        return run

    def numpy_loop() -> None:
        base = MinimalNumpy(model, batch)
        ids = np.zeros(batch, dtype=np.intp)
        for _ in range(steps):
            ids = base.step(ids)

    def torch_loop(onednn: bool, n: int) -> Callable[[], None]:
        def run() -> None:
            base = EagerTorch(model, batch, onednn=onednn)
            ids = torch.zeros((batch, 1), dtype=torch.long)
            for _ in range(n):
                ids = base.step(ids)
        return run

    def matmul_floor() -> None:
        engine = NumpyEngine(model, 1)
        products = [(x, w) for x, w, *_ in engine.plan] if engine.kind == "lstm" else []
        g, head_in, head, logits = engine.g, engine.head_in, engine.head, engine.logits
        for _ in range(steps):
            for x, w in products:
                np.matmul(x, w, out=g)
            np.matmul(head_in, head, out=logits)

    if batch == 1:
        return {"charrnn": (charrnn(), steps), "numpy_minimal": (numpy_loop, steps),
                "torch_eager": (torch_loop(True, slow_steps), slow_steps),
                "torch_nomkl": (torch_loop(False, steps), steps), "matmul_floor": (matmul_floor, steps)}
    return {"charrnn": (charrnn(), steps * batch), "numpy_batched": (numpy_loop, steps * batch),
            "torch_onednn": (torch_loop(True, steps), steps * batch),
            "charrnn_numpy": (charrnn("numpy"), steps * batch), "charrnn_torch": (charrnn("torch"), steps * batch)}


def decode_chain_us(repeats: int, steps: int = 2000) -> dict[str, float]:
    """Microseconds per batch-1 decoding step (softmax, draw, log-probabilities, entropy)."""
    rng = np.random.default_rng(0)
    logits_np = rng.normal(size=(1, len(VOCAB))).astype(np.float32)
    logits_t = torch.from_numpy(logits_np)
    u = np.array([0.37])
    rows = np.arange(1)

    def numpy_chain() -> None:  # charrnn's decoding chain: the draw now, statistics a block of steps later
        chooser = Chooser(Decoding(temperature=TEMPERATURE), len(VOCAB))
        statistics = Statistics(chooser, 1)
        for _ in range(steps):
            statistics.add(logits_np, chooser.choose(logits_np, u), rows)
        statistics.flush()

    def torch_chain() -> None:  # the same work written with torch ops, as the sampler used to be
        for _ in range(steps):
            x = logits_t.double()
            probs = torch.softmax(x / TEMPERATURE, dim=1)
            cdf = torch.cumsum(probs, dim=1)
            ids = torch.searchsorted(cdf, torch.from_numpy(u).unsqueeze(1) * cdf[:, -1:]).squeeze(1)
            logp = torch.log(probs.gather(1, ids.unsqueeze(1)).squeeze(1))
            model_logp = torch.log_softmax(x, dim=1).gather(1, ids.unsqueeze(1)).squeeze(1)
            ent = -(probs * torch.log(probs.clamp_min(1e-300))).sum(dim=1)
            float(logp), float(model_logp), float(ent), ids.tolist()

    out = {}
    for name, fn in (("numpy", numpy_chain), ("torch", torch_chain)):
        fn()
        out[name] = min(timed(fn)[1] for _ in range(repeats)) / steps * 1e6  # CPU time: one thread here
    return out


def measure(models: list[tuple[int, int]], batches: list[int], steps1: int, slow_steps: int, steps64: int,
            repeats: int) -> dict:
    results: dict = {"threads": torch.get_num_threads(), "models": {}}
    with torch.inference_mode(False):
        for layers, hidden in models:
            model = make_model(layers, hidden)
            check_baselines(model)
            entry = {}
            for batch in batches:
                steps = steps1 if batch == 1 else steps64
                runs = variants(model, batch, steps, slow_steps)
                for fn, _ in runs.values():  # warm-up: allocations, BLAS threads, oneDNN primitives
                    fn()
                wall: dict[str, list[float]] = {name: [] for name in runs}
                cpu: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(repeats):
                    for name, (fn, chars) in runs.items():
                        seconds, cpu_seconds = timed(fn)
                        wall[name].append(chars / seconds)
                        cpu[name].append(chars / cpu_seconds)
                entry[str(batch)] = {"wall": wall, "cpu": cpu}
            results["models"][f"{layers}x{hidden}"] = entry
    results["decode_us"] = decode_chain_us(repeats)
    return results


# ----------------------------------------------------------------------------------------------
# report


def paired(rates: dict[str, list[float]], baselines: tuple[str, ...]) -> float:
    """Median over rounds of charrnn / the fastest of `baselines` in the same round.

    Variants of one round run back to back, so a slow drift in the machine's load (other programs
    come and go over minutes) cancels in the ratio; the median ignores a round a burst hit.
    """
    per_round = [ours / max(rates[b][i] for b in baselines) for i, ours in enumerate(rates["charrnn"])]
    return statistics.median(per_round)


def report(all_results: list[dict]) -> list[str]:
    lines = []
    for res in all_results:
        t = res["threads"]
        d = res["decode_us"]
        # With one thread every variant computes on the calling thread, so its CPU time is its run
        # time without the moments other programs held the core: the figure to judge on a shared
        # machine. With two, CPU time also counts worker threads waiting, so wall clock is used.
        basis = "cpu" if t == 1 else "wall"
        unit = "chars per CPU-second" if basis == "cpu" else "chars per wall-clock second"
        lines.append(f"\n## {t} thread(s), ratios on {unit}   (decoding chain alone at batch 1: "
                     f"NumPy {d['numpy']:.1f} us/step, torch {d['torch']:.1f} us/step, {d['torch'] / d['numpy']:.1f}x)")
        lines.append(f"{'model':<7} {'batch':>5}  {'variant':<14} {'chars/s':>10} {'chars/CPU-s':>12}  ratio")
        for model, entry in res["models"].items():
            for batch, both in entry.items():
                rates = both[basis]
                best = {name: max(r) for name, r in rates.items()}
                ours = best["charrnn"]
                for name in best:
                    lines.append(f"{model:<7} {batch:>5}  {name:<14} {max(both['wall'][name]):>10,.0f} "
                                 f"{max(both['cpu'][name]):>12,.0f}  "
                                 + ("" if name == "charrnn" else f"charrnn is {ours / best[name]:.2f}x"))
                if batch == "1":
                    verdicts = [f"vs numpy_minimal {ours / best['numpy_minimal']:.2f}x (need >= 1; paired "
                                f"{paired(rates, ('numpy_minimal',)):.2f}x)",
                                f"vs torch_eager {ours / best['torch_eager']:.1f}x (need >= 10; paired "
                                f"{paired(rates, ('torch_eager',)):.1f}x)",
                                f"matmul_floor / torch_eager {best['matmul_floor'] / best['torch_eager']:.1f}x "
                                "(the most any exact float32 step could reach)"]
                else:
                    name = max(("numpy_batched", "torch_onednn"), key=best.__getitem__)
                    verdicts = [f"vs the faster baseline ({name}) {ours / best[name]:.2f}x (need >= 0.9; paired "
                                f"{paired(rates, ('numpy_batched', 'torch_onednn')):.2f}x)"]
                if "charrnn_numpy" in best:
                    picked = "torch" if prefers_torch(make_model(*map(int, model.split("x"))), int(batch)) else "numpy"
                    torch_over_numpy = statistics.median(
                        a / b for a, b in zip(rates["charrnn_torch"], rates["charrnn_numpy"], strict=True))
                    verdicts.append(f"engine picked: {picked}; torch engine / numpy engine "
                                    f"{best['charrnn_torch'] / best['charrnn_numpy']:.2f}x (paired {torch_over_numpy:.2f}x)")
                lines.append(f"{'':<7} {batch:>5}  -> " + "; ".join(verdicts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps, this process only")
    parser.add_argument("--threads", default="1,2", help="thread counts, one process each (default 1,2)")
    parser.add_argument("--models", default="2x256,2x512", help="LAYERSxHIDDEN list (default 2x256,2x512)")
    parser.add_argument("--steps", type=int, default=2000, help="characters per batch-1 run")
    parser.add_argument("--slow-steps", type=int, default=300, help="characters per torch_eager run (it is slow)")
    parser.add_argument("--steps64", type=int, default=100, help="steps per batch-64 run")
    parser.add_argument("--repeats", type=int, default=9, help="round-robin rounds; the best of each variant is kept")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = [tuple(int(v) for v in m.split("x")) for m in args.models.split(",")]
    if args.smoke:
        global SETTLE_S
        SETTLE_S = 0.0
        res = measure([(1, 32)], [1, 8], steps1=40, slow_steps=10, steps64=10, repeats=1)
        print("\n".join(report([res])))
        return
    if args.child:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        res = measure(models, [1, 64], args.steps, args.slow_steps, args.steps64, args.repeats)
        print(json.dumps(res))
        return
    all_results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--child", "--models", args.models, "--steps", str(args.steps),
               "--slow-steps", str(args.slow_steps), "--steps64", str(args.steps64), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        all_results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"sampling speed, chars/s (best of {args.repeats}); torch {torch.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs")
    print("\n".join(report(all_results)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(all_results, f, indent=1)


if __name__ == "__main__":
    main()
