"""Throughput beside busy programs: charrnn's thread policy against the fixed alternatives, in one run.

For each workload it measures characters per second of wall clock

  train      the real trainer (`Trainer.run`) on the default model (the `quick` preset: 2x256 LSTM,
             batch 32 x seq 100, bf16 autocast where the CPU computes bf16 natively, else fp32)
  sample-1   `generate_batch` at batch 1 (NumPy step engine: OpenBLAS threads)
  sample-64  `generate_batch` at batch 64 (torch + oneDNN for this model: torch's OpenMP threads)

alone, beside 1 busy process and beside 2 busy processes (a busy process is a tight pure-Python
loop in a child process, bounded in time and killed when its load level ends), for each variant

  before     the behaviour before charrnn chose: all cores for torch and BLAS, OpenMP's default
             waiting (idle threads spin before they sleep)
  passive    all cores, OMP_WAIT_POLICY=PASSIVE
  1-thread   one thread for torch and BLAS
  auto       charrnn's own choice (`charrnn.threads`: a quiet start spins 5,000 iterations on
             every core; a loaded one sleeps (PASSIVE) on the free cores, or on every core when
             others fill them all; training re-checks the count after a quiet start)

Every measurement runs in a fresh process (OpenMP reads its settings when torch loads). Load
levels and variants are interleaved in rounds, with the variants' order rotated each round, so
background load that drifts hits all variants alike; a cell is the median over rounds. It prints
each variant's ratio to the best variant under the same load, the verdict against the two
criteria (auto >= 0.8x the best under load; auto >= 0.95x the best when alone), and a markdown
table ready for BENCHMARKS.md.

    python benchmarks/contention.py              # full run: 180 processes, ~28 minutes on 2 cores
    python benchmarks/contention.py --smoke      # a few seconds per cell: tiny model, checks it runs

Five rounds by default: a cell's median then survives two outlying rounds (with three, one slow
round on a quiet machine moved a cell from 0.98x to 0.95x). Windows are 5 s: a training step is
3,200 characters, so a 3 s window beside busy processes held 5-10 steps and one step more or less
moved a cell by 10-20%. Beside busy processes
identical configurations still land 2x apart from window to window; read the per-round values
(stderr) before a verdict. No window holds a thread trial (a quiet-started run makes its first
after 15 s; a loaded-started one makes none), and a neighbour who arrives mid-run is not measured
here. On a machine that other people use the "alone" level is not alone: read /proc/loadavg.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("before", "passive", "1-thread", "auto")
WORKLOADS = ("train", "sample-1", "sample-64")
UNDER_LOAD_MIN = 0.8  # auto / best variant, beside busy processes
QUIET_MIN = 0.95  # auto / best variant, alone
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CHARRNN_THREADS", "OPENBLAS_NUM_THREADS",
              "MKL_NUM_THREADS")
BUSY_LOOP = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


# ---------------------------------------------------------------------------------------------
# child: one workload, one variant, in a fresh process


def child(variant: str, workload: str, seconds: float, warmup: float, smoke: bool) -> dict:
    if variant == "auto":
        from charrnn import threads

        threads.prepare_process()  # what the CLI does first: before torch loads
    import torch

    from charrnn.config import PRESETS, ModelConfig, TrainConfig

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if variant in ("before", "passive") or variant.startswith("spin-"):
        torch.set_num_threads(cores)  # torch's own default; OpenBLAS starts with all cores too
    preset = PRESETS["quick"]
    text = synthetic_text(60_000 if smoke else 200_000)
    vocab_size = len(set(text))
    model_cfg = ModelConfig.from_dict({**preset["model"], "vocab_size": vocab_size})
    if smoke:
        model_cfg = ModelConfig(vocab_size=vocab_size, embed_dim=8, hidden_size=32, num_layers=1, dropout=0.0)
    if workload == "train":
        chars_per_s = train_rate(text, model_cfg, TrainConfig.from_dict(preset["train"]), seconds, warmup, smoke)
    else:
        chars_per_s = sample_rate(model_cfg, text, 1 if workload == "sample-1" else 64, seconds, warmup)
    from charrnn import threads

    return {"variant": variant, "workload": workload, "chars_per_s": chars_per_s,
            "threads_at_end": torch.get_num_threads(), "plan": str(threads.current_plan())}


def synthetic_text(n_chars: int) -> str:
    """Play-like text with a realistic character distribution (the corpus is not needed)."""
    import random

    rng = random.Random(0)
    words = ["the", "and", "my", "lord", "to", "of", "I", "you", "that", "is", "with", "not", "his", "be",
             "your", "for", "have", "thou", "me", "what", "shall", "ROMEO:", "JULIET:", "KING", "\n", ",", "."]
    return " ".join(rng.choice(words) for _ in range(n_chars // 3))[:n_chars]


def train_rate(text: str, model_cfg, train_cfg, seconds: float, warmup: float, smoke: bool) -> float:  # noqa: ANN001
    """chars/s of the real trainer's steps after `warmup` seconds (evaluation kept out of the window)."""
    from charrnn.train import Trainer

    if smoke:
        train_cfg = train_cfg.replace(batch_size=8, seq_len=32)
    # A small validation share: the run's final evaluation is not timed, but a slow variant on a
    # loaded machine would spend minutes on a big one.
    cfg = train_cfg.replace(time_budget=warmup + seconds, max_steps=None, eval_interval=10**9, log_interval=1,
                            sample_interval=0, sample_length=0, precision="auto", device="cpu", val_frac=0.02)
    marks: list[tuple[float, int]] = []

    def log(event: dict) -> None:
        if event["event"] == "step":
            marks.append((time.perf_counter(), event["step"]))

    with tempfile.TemporaryDirectory() as tmp:
        Trainer(text, Path(tmp) / "run", model_cfg, cfg, log=log).run()
    if len(marks) < 2:
        return 0.0
    # The window starts after the warm-up, at the latest at the second-last step (a slow variant on
    # a loaded machine may make only a few steps).
    start = next((m for m in marks[:-1] if m[0] >= marks[0][0] + warmup), marks[-2])
    return (marks[-1][1] - start[1]) * cfg.batch_size * cfg.seq_len / (marks[-1][0] - start[0])


def sample_rate(model_cfg, text: str, batch: int, seconds: float, warmup: float) -> float:  # noqa: ANN001
    """chars/s of `generate_batch` (random weights: the speed does not depend on them)."""
    import torch

    from charrnn.model import CharRNN
    from charrnn.sample import Decoding, generate_batch
    from charrnn.vocab import Vocab

    torch.manual_seed(0)
    vocab = Vocab.from_text(text)
    model = CharRNN(model_cfg).eval()
    length = 400 if batch == 1 else 40
    chars, timed_from, t_end = 0, None, time.perf_counter() + warmup
    seed = 0
    while True:
        now = time.perf_counter()
        if timed_from is None and now >= t_end:
            timed_from, chars = now, 0
        elif timed_from is not None and now - timed_from >= seconds:
            return chars / (now - timed_from)
        generate_batch(model, vocab, length, num_samples=batch, seed=seed, decoding=Decoding(temperature=0.8))
        chars += batch * length
        seed += 1


# ---------------------------------------------------------------------------------------------
# parent: load levels, rounds, variants


def variant_env(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else repo
    if variant == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif variant.startswith("spin-"):  # an extra variant to explore: a bounded spin, then sleep
        env["GOMP_SPINCOUNT"] = variant.split("-", 1)[1]
    elif variant == "1-thread":
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def start_busy(n: int, limit: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(limit=limit)]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()


def measure(variant: str, workload: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--workload", workload, "--seconds", str(args.seconds),
           "--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
    try:
        out = subprocess.run(cmd, env=variant_env(variant), capture_output=True, text=True,
                             timeout=args.child_timeout)
    except subprocess.TimeoutExpired:  # so slow it never finished (spinning threads on a loaded machine)
        return {"variant": variant, "workload": workload, "chars_per_s": 0.0, "threads_at_end": "timeout"}
    if out.returncode != 0:
        raise SystemExit(f"Error: child {variant}/{workload} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    loads = [int(x) for x in args.loads.split(",")]
    workloads = args.workloads.split(",")
    variants = args.variants.split(",")
    if "auto" not in variants:
        raise SystemExit("Error: --variants must include auto (the verdict is about it)")
    cells: dict[tuple[str, int, str], list[float]] = {}
    chosen: dict[tuple[str, int], list[int]] = {}
    per_level = len(workloads) * len(variants) * (args.seconds + args.warmup + 3)
    for r in range(args.rounds):
        for load in loads:
            busy = start_busy(load, limit=per_level + 60)
            try:
                time.sleep(0.5)  # let the neighbours get going
                for workload in workloads:
                    order = variants[r % len(variants):] + variants[: r % len(variants)]
                    for variant in order:
                        rec = measure(variant, workload, args)
                        cells.setdefault((workload, load, variant), []).append(rec["chars_per_s"])
                        if variant == "auto":
                            chosen.setdefault((workload, load), []).append(rec["threads_at_end"])
                        print(f"  round {r + 1} load {load} {workload:<9} {variant:<8} "
                              f"{rec['chars_per_s']:>10,.0f} chars/s ({rec['threads_at_end']} thr)",
                              file=sys.stderr, flush=True)
            finally:
                stop_busy(busy)
    results = []
    for workload in workloads:
        for load in loads:
            rates = {v: statistics.median(cells[(workload, load, v)]) for v in variants}
            best = max(rates.values()) or 1.0
            ratio = rates["auto"] / best
            need = QUIET_MIN if load == 0 else UNDER_LOAD_MIN
            results.append({"workload": workload, "busy": load, "rates": rates,
                             "ratios": {v: rates[v] / best for v in variants},
                             "auto_threads": chosen.get((workload, load), []), "need": need,
                             "pass": ratio >= need})
    return {"variants": variants, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "rounds": args.rounds, "seconds": args.seconds, "smoke": args.smoke, "results": results,
            "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "passed": all(r["pass"] for r in results)}


def markdown(report: dict) -> str:
    lines = [f"{report['cores']} cores, {report['rounds']} round(s) of {report['seconds']:g} s windows; "
             f"chars/s (ratio to the best variant under the same load); auto's thread count per round",
             "",
             "| workload | busy processes | " + " | ".join(report["variants"]) + " | auto threads | verdict |",
             "|---|---|" + "---|" * len(report["variants"]) + "---|---|"]
    for r in report["results"]:
        cells = [f"{r['rates'][v]:,.0f} ({r['ratios'][v]:.2f})" for v in report["variants"]]
        verdict = ("PASS" if r["pass"] else "FAIL") + f" (auto >= {r['need']:.2f})"
        lines.append(f"| {r['workload']} | {r['busy']} | " + " | ".join(cells) +
                     f" | {','.join(map(str, r['auto_threads']))} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, short windows, one round: checks it runs")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; smoke 1)")
    parser.add_argument("--seconds", type=float, default=None, help="timed window per cell (default 5; smoke 0.3)")
    parser.add_argument("--warmup", type=float, default=None, help="untimed start per cell (default 1.5; smoke 0.2)")
    parser.add_argument("--loads", default=None, help="busy processes per level (default 0,1,2; smoke 1)")
    parser.add_argument("--workloads", default=None, help=f"comma-separated, of {','.join(WORKLOADS)}")
    parser.add_argument("--child-timeout", type=float, default=120.0,
                        help="seconds a measurement may take in all, start-up included; past it, 0 chars/s")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; besides the four, spin-N (all cores, GOMP_SPINCOUNT=N) explores")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A stopped benchmark still stops its busy processes (the `finally` in run).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    if args.child:
        print(json.dumps(child(args.child, args.workload, args.seconds, args.warmup, args.smoke)))
        return
    args.rounds = args.rounds or (1 if args.smoke else 5)
    args.seconds = args.seconds or (0.3 if args.smoke else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.smoke else 1.5)
    args.loads = args.loads or ("1" if args.smoke else "0,1,2")
    args.workloads = args.workloads or (",".join(WORKLOADS[:2]) if args.smoke else ",".join(WORKLOADS))
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return
    print(markdown(report))
    print()
    for r in report["results"]:
        print(f"{r['workload']:<9} beside {r['busy']} busy: auto {r['ratios']['auto']:.2f}x the best "
              f"(need >= {r['need']:.2f}): {'PASS' if r['pass'] else 'FAIL'}")
    print("verdict:", "PASS" if report["passed"] else "FAIL", f"(1-minute load average at the end {report['loadavg']:.1f})")


if __name__ == "__main__":
    main()
