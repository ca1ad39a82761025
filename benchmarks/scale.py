"""Scale benchmark: preparing and training on 100 MB / 1 GB corpora, and 1 vs 2 training processes.

    nice -n 19 python benchmarks/scale.py                      # everything (about 10-15 minutes)
    nice -n 19 python benchmarks/scale.py --sizes 100M --skip-throughput

Corpus: tiny Shakespeare + Paul Graham's essays ($CHARRNN_DATA_MIRROR or /work/shared/data),
concatenated in random ~1 MB slices, some perturbed (accented vowels, swapped case), written under
--workdir (default /tmp/charrnn-scale; never the repository). Every measurement runs in a child
process that reports its own peak RSS (VmHWM), so one measurement cannot inflate another:

  prepare   CorpusFiles(...).load(): the two streaming passes that write the id file
  reuse     the same call again (cache hit: size + mtime check only)
  naive     the in-memory path (read_text + Vocab + encode + batchify to int64), up to 100 MB
  train     Trainer on the memory-mapped corpus: N steps + one evaluation (at most 200k validation
            characters) + checkpoints + plot, then a read of the whole id file (what one epoch leaves
            resident)
  baseline  prepare and train exactly the same way on a 1 MB corpus: the "constant" (Python, torch,
            the model and its optimizer state, activations, evaluation, plotting, saving). Peak RSS
            on a big corpus minus the baseline's is compared with the id files' size difference.

Throughput: the same Trainer.run() (2x256 LSTM, global batch 32 x 100, tiny Shakespeare) on one
process (2 threads, torch's default here), one process with 1 thread, and `torchrun
--nproc_per_node 2` (1 thread each, torchrun's default); characters/s of wall clock after a
warm-up, total and per process, best of --repeats alternating rounds, and characters per
CPU-second of one process (work per core, which hardly depends on the machine's other load: on an
idle machine with a core per process, N processes run at about N x that rate). Ratios are against
runs measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"1M": 1_000_000, "10M": 10_000_000, "100M": 100_000_000, "1G": 1_000_000_000}
MODEL = {"embed_dim": 64, "hidden_size": 256, "num_layers": 2, "dropout": 0.0}


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ------------------------------------------------------------------------------------------------
# children: each prints one JSON line


def child_prepare(corpus: str, cache: str, val_frac: float) -> dict:
    from charrnn.corpus_cache import CorpusFiles

    t0 = time.perf_counter()
    files = CorpusFiles([corpus], cache_dir=cache)
    data = files.load(val_frac=val_frac)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss": _peak_rss(), "status": files.last_status,
            "id_bytes": os.path.getsize(data.info["id_file"]), "chars": data.info["chars"],
            "vocab": len(data.vocab), "dtype": data.train_ids.dtype.name}


def child_naive(corpus: str, val_frac: float) -> dict:
    import torch

    from charrnn.data import encode, read_text, split, stream_rows
    from charrnn.vocab import Vocab

    t0 = time.perf_counter()
    text = read_text(corpus)
    vocab = Vocab.from_text(text)
    train_ids, val_ids = split(encode(text, vocab), val_frac)
    streams = torch.from_numpy(stream_rows(train_ids, 32).astype("int64"))  # what the trainer used to hold: int64 streams
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss": _peak_rss(), "chars": len(text), "streams_bytes": streams.numel() * 8}


def child_train(corpus: str, cache: str, val_frac: float, steps: int, run_dir: str) -> dict:
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.corpus_cache import CorpusFiles
    from charrnn.train import Trainer

    data = CorpusFiles([corpus], cache_dir=cache).load(val_frac=val_frac)
    cfg = TrainConfig(batch_size=32, seq_len=100, max_steps=steps, time_budget=None, eval_interval=steps,
                      device="cpu", precision="fp32", sample_length=0, lr=2e-3)
    # Evaluation scores at most 200k characters: enough to include it in the peak, short enough to wait for.
    trainer = Trainer(data, run_dir, ModelConfig(**MODEL), cfg)
    max_val_rows = max(1, 200_000 // trainer.val.shape[1])
    trainer.val = trainer.val[:max_val_rows]
    t0 = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in trainer.model.parameters())
    after_training = _peak_rss()
    total = 0
    ids = data.train_ids  # touch every page of the id file, as a full epoch would
    for start in range(0, len(ids), 64 << 20):
        total += int(np.asarray(ids[start : start + (64 << 20)]).sum(dtype=np.int64))
    return {"seconds": seconds, "steps": result.step, "peak_rss_training": after_training,
            "peak_rss_all_pages": _peak_rss(), "params": params, "model_state_bytes": params * 4 * 4,
            "id_bytes": os.path.getsize(data.info["id_file"]), "val_loss": result.best_val_loss, "checksum": total}


def _run_child(args: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# the synthetic corpus


def _sources(data_dir: Path) -> str:
    texts = []
    for name in ("tinyshakespeare.txt", "paulgraham.txt", "shakespeare.txt"):
        path = data_dir / name
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    if not texts:
        raise SystemExit(f"no source text in {data_dir}; set CHARRNN_DATA_MIRROR")
    return "\n\n".join(texts)


def build_corpus(path: Path, size: int, data_dir: Path, seed: int = 0) -> float:
    """Concatenate random ~1 MB slices of real text, a third of them perturbed, up to `size` bytes."""
    if path.is_file() and path.stat().st_size == size:
        return 0.0
    rng = np.random.default_rng(seed)
    source = _sources(data_dir)
    accents = [str.maketrans("aeiou", "àéîõü"), str.maketrans("aeiou", "äëïöü"), str.maketrans("eao", "èåø")]
    t0 = time.perf_counter()
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        while written < size:
            start = int(rng.integers(0, len(source) - 1_100_000))
            piece = source[start : start + int(rng.integers(900_000, 1_100_000))]
            kind = int(rng.integers(0, 6))
            if kind < 3:
                piece = piece.translate(accents[kind])
            elif kind == 3:
                piece = piece.swapcase()
            data = piece.encode("utf-8")
            room = size - written
            if len(data) > room:  # the last slice: cut on a character boundary, pad to the exact size
                data = data[:room].decode("utf-8", "ignore").encode("utf-8")
                data += b"\n" * (room - len(data))
            out.write(data)
            written += len(data)
    os.replace(tmp, path)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# throughput


def child_tp_worker(corpus: str, cache: str, steps: int, out_json: str, run_dir: str) -> None:
    """One training run through Trainer.run(), under torchrun or alone; rank 0 records each step's
    wall clock and its own CPU time (CPU time hardly depends on what else the machine runs)."""
    import torch

    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.corpus_cache import CorpusFiles
    from charrnn.distributed import shutdown
    from charrnn.train import Trainer

    marks: list[tuple[int, float, float]] = []

    def log(event: dict) -> None:
        if event["event"] == "step":
            marks.append((event["step"], time.perf_counter(), time.process_time()))

    cfg = TrainConfig(batch_size=32, seq_len=100, max_steps=steps, time_budget=None, eval_interval=10 * steps,
                      log_interval=1, val_frac=0.01, device="cpu", precision="fp32", sample_length=0, lr=2e-3)
    trainer = Trainer(CorpusFiles([corpus], cache_dir=cache), run_dir, ModelConfig(**MODEL), cfg, log=log)
    trainer.run()
    if trainer.dist.is_main:
        Path(out_json).write_text(json.dumps({"marks": marks, "threads": torch.get_num_threads(),
                                              "world_size": trainer.dist.world_size}))
    shutdown()


def _throughput_run(procs: int, threads: int, corpus: Path, cache: Path, out: Path, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    worker = [str(Path(__file__).resolve()), "--child", "tp-worker", str(corpus), str(cache), str(steps),
              str(out / "marks.json"), str(out / "run")]
    if procs == 1:
        cmd = [sys.executable, *worker]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
        cmd = [*launcher, "--standalone", "--nproc_per_node", str(procs), *worker]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"training run failed ({procs} processes):\n{proc.stderr[-3000:]}")
    rec = json.loads((out / "marks.json").read_text())
    assert rec["world_size"] == procs and rec["threads"] == threads, rec
    marks = {step: (wall, cpu) for step, wall, cpu in rec["marks"]}
    warm = max(5, steps // 5)  # skip start-up: first steps allocate, DDP builds its buckets
    chars = (steps - warm) * 32 * 100  # the global batch
    wall = marks[steps][0] - marks[warm][0]
    cpu = marks[steps][1] - marks[warm][1]  # rank 0's, all its threads
    return {"chars_per_s": chars / wall, "chars_per_cpu_s": chars / procs / cpu}


def throughput(corpus: Path, cache: Path, work: Path, steps: int, repeats: int) -> list[dict]:
    configs = [(1, 2), (1, 1), (2, 1)]
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    for _ in range(repeats):  # alternate, so a burst of load elsewhere hits every configuration
        for procs, threads in configs:
            runs[(procs, threads)].append(_throughput_run(procs, threads, corpus, cache,
                                                          work / f"tp-{procs}x{threads}", steps))
    out = []
    for (procs, threads), rs in runs.items():
        best = max(r["chars_per_s"] for r in rs)
        out.append({"procs": procs, "threads": threads, "chars_per_s": best, "per_process": best / procs,
                    "median": statistics.median(r["chars_per_s"] for r in rs),
                    "chars_per_cpu_s": max(r["chars_per_cpu_s"] for r in rs)})
    return out


# ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100M,1G", help="Corpus sizes to prepare and train on (100M, 1G).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/charrnn-scale"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CHARRNN_DATA_MIRROR", "/work/shared/data")))
    parser.add_argument("--val-frac", type=float, default=0.001, help="Validation share for the big corpora.")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--throughput-steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="Keep the corpora and caches for the next run.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            print(json.dumps(child_prepare(rest[0], rest[1], float(rest[2]))))
        elif kind == "naive":
            print(json.dumps(child_naive(rest[0], float(rest[1]))))
        elif kind == "tp-worker":
            child_tp_worker(rest[0], rest[1], int(rest[2]), rest[3], rest[4])
        elif kind == "train":
            print(json.dumps(child_train(rest[0], rest[1], float(rest[2]), int(rest[3]), rest[4])))
        return

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs; work folder {work}")
    mb = 1e6
    base: dict | None = None
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for label in ["1M", *[x for x in labels if x != "1M"]]:
        size = SIZES[label]
        corpus = work / f"corpus-{label}.txt"
        cache = work / f"cache-{label}"
        built = build_corpus(corpus, size, args.data_dir)
        shutil.rmtree(cache, ignore_errors=True)
        prep = _run_child(["prepare", str(corpus), str(cache), str(args.val_frac)])
        again = _run_child(["prepare", str(corpus), str(cache), str(args.val_frac)])
        tr = _run_child(["train", str(corpus), str(cache), str(args.val_frac), str(args.train_steps),
                         str(work / f"run-{label}")])
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(work / f"run-{label}", ignore_errors=True)
        if base is None:
            base = {"prep": prep, "train": tr}
            print(f"baseline, 1 MB corpus: prepare peak RSS {prep['peak_rss'] / mb:.0f} MB; train {tr['steps']} steps "
                  f"({tr['params']:,} parameters, optimizer state {tr['model_state_bytes'] / mb:.0f} MB) peak RSS "
                  f"{tr['peak_rss_all_pages'] / mb:.0f} MB")
            continue
        print(f"\n[{label}] {prep['chars']:,} characters ({size / mb:,.0f} MB), vocabulary {prep['vocab']} "
              f"({prep['dtype']}), id file {prep['id_bytes'] / mb:,.0f} MB" + (f"; corpus built in {built:.0f}s" if built else ""))
        print(f"  prepare (2 streaming passes): {prep['seconds']:.1f}s = {size / mb / prep['seconds']:.1f} MB/s, "
              f"peak RSS {prep['peak_rss'] / mb:.0f} MB ({(prep['peak_rss'] - base['prep']['peak_rss']) / mb:+.0f} MB "
              f"over the 1 MB corpus)")
        print(f"  reuse (cache {again['status']}): {again['seconds'] * 1000:.0f} ms, peak RSS {again['peak_rss'] / mb:.0f} MB")
        if size <= 100_000_000:  # the in-memory path needs ~20 bytes a character: not at 1 GB
            naive = _run_child(["naive", str(corpus), str(args.val_frac)])
            print(f"  in-memory path (read_text + encode + int64 streams): {naive['seconds']:.1f}s, peak RSS "
                  f"{naive['peak_rss'] / mb:,.0f} MB -> the cache takes {prep['seconds'] / naive['seconds']:.2f}x the "
                  f"time and {prep['peak_rss'] / naive['peak_rss']:.2f}x the memory")
        extra = tr["peak_rss_all_pages"] - base["train"]["peak_rss_all_pages"]
        id_extra = tr["id_bytes"] - base["train"]["id_bytes"]
        print(f"  train {tr['steps']} steps + evaluation + saves: {tr['seconds']:.1f}s, peak RSS "
              f"{tr['peak_rss_training'] / mb:,.0f} MB ({(tr['peak_rss_training'] - base['train']['peak_rss_training']) / mb:+,.0f} MB "
              f"over the 1 MB corpus); after reading every page of the id file {tr['peak_rss_all_pages'] / mb:,.0f} MB")
        print(f"  bound: 1 MB-corpus run {base['train']['peak_rss_all_pages'] / mb:,.0f} MB + id file growth "
              f"{id_extra / mb:,.0f} MB = {(base['train']['peak_rss_all_pages'] + id_extra) / mb:,.0f} MB; measured "
              f"{tr['peak_rss_all_pages'] / mb:,.0f} MB (growth {extra / mb:,.0f} MB = {extra / max(id_extra, 1):.3f}x the id file's)")
    if not args.skip_throughput:
        corpus = args.data_dir / "tinyshakespeare.txt"
        rows = throughput(corpus, work / "cache-tp", work, args.throughput_steps, args.repeats)
        base = next(r for r in rows if r["procs"] == 1 and r["threads"] == 2)["chars_per_s"]
        print(f"\nthroughput, global batch 32 x 100, 2x256 LSTM, {args.throughput_steps} steps "
              f"(best of {args.repeats}; load average now {os.getloadavg()[0]:.2f}):")
        single = next(r for r in rows if r["procs"] == 1 and r["threads"] == 1)
        for r in rows:
            print(f"  {r['procs']} process(es) x {r['threads']} thread(s): {r['chars_per_s']:,.0f} chars/s total, "
                  f"{r['per_process']:,.0f} per process (median {r['median']:,.0f}) -> {r['chars_per_s'] / base:.2f}x "
                  f"the 1x2 run, {r['chars_per_s'] / single['chars_per_s']:.2f}x the 1x1 run; "
                  f"{r['chars_per_cpu_s']:,.0f} chars per CPU-second per process "
                  f"({r['chars_per_cpu_s'] / single['chars_per_cpu_s']:.2f}x the 1x1 run's)")
        shutil.rmtree(work / "cache-tp", ignore_errors=True)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
