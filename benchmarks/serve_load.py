"""Playground load: many streaming clients on one run against one batched generation, in one run.

Starts `charrnn serve` on a loopback port (a subprocess, as a user runs it) over one run, then for
1, 8 and 32 concurrent clients, each streaming one sample of --length characters (seed = client
number, T=0.8) over server-sent events, measures

  aggregate chars/s   all characters received / wall time from the first request to the last end
  ratio               that / `generate_batch` with the same number of samples, timed in this
                      process in the same run (the goal at 32 clients: >= 0.8)
  ttfc median, p99    time from sending a request to its first characters
  errors              responses that were not 200, streams without their end, or short texts

and how many streams' texts differ from `generate_batch`'s sample with the same seed (they should
not: continuous batching keeps each stream's own draws). Rounds alternate the server and the
baseline and the best of each is kept (other programs on the machine can only slow a round down).
Everything is bounded: --timeout seconds per round, at most 32 clients.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py          # ~1 minute on 2 idle cores
    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --smoke  # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from charrnn.checkpoint import save, write_meta
from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.sample import Decoding, generate_batch
from charrnn.vocab import Vocab

TEXT = "".join(chr(c) for c in range(32, 97))  # a 65-character vocabulary, as tiny Shakespeare's


def make_run(root: Path, hidden: int, layers: int) -> tuple[CharRNN, Vocab]:
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    config = ModelConfig(vocab_size=len(vocab), embed_dim=64, hidden_size=hidden, num_layers=layers, dropout=0.0)
    model = CharRNN(config).eval()
    meta = {"model_config": config.to_dict(), "vocab": vocab.to_list(), "corpus": {"name": "bench"}}
    (root / "bench").mkdir()
    save(root / "bench" / "best.pt", model, meta)
    write_meta(root / "bench", meta)
    return model, vocab


def start_server(root: Path) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}")
    host, port = line.split("http://", 1)[1].split("/", 1)[0].split(":")
    return proc, host, int(port)


async def one_client(host: str, port: int, body: dict, t0: float) -> dict:
    """One streaming request over a raw loopback connection (a light client: the server is measured)."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = json.dumps(body).encode()
    writer.write(f"POST /api/generate HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    first = None
    text: list[str] = []
    ended = False
    event = ""
    async for raw in reader:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "chars":
            if first is None:
                first = time.perf_counter() - t0
            text.append(json.loads(line[6:])["text"])
        elif line.startswith("data: ") and event == "end":
            ended = True
    writer.close()
    return {"status": status, "ttfc": first, "text": "".join(text), "ended": ended, "done": time.perf_counter()}


async def load_round(host: str, port: int, clients: int, length: int, timeout: float) -> dict:
    t0 = time.perf_counter()
    bodies = [{"run": "bench", "length": length, "seed": i, "temperature": 0.8, "stream": True} for i in range(clients)]
    results = await asyncio.wait_for(asyncio.gather(*(one_client(host, port, b, time.perf_counter()) for b in bodies)),
                                     timeout)
    wall = max(r["done"] for r in results) - t0
    chars = sum(len(r["text"]) for r in results)
    errors = sum(r["status"] != 200 or not r["ended"] or len(r["text"]) != length for r in results)
    return {"chars_per_s": chars / wall, "ttfc": [r["ttfc"] for r in results if r["ttfc"] is not None],
            "errors": errors, "texts": [r["text"] for r in results]}


def baseline_round(model: CharRNN, vocab: Vocab, clients: int, length: int) -> tuple[float, list[str]]:
    t = time.perf_counter()
    samples = generate_batch(model, vocab, length, num_samples=clients, decoding=Decoding(temperature=0.8), seed=0)
    return clients * length / (time.perf_counter() - t), [s.text for s in samples]


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts (at most 32)")
    parser.add_argument("--length", type=int, default=3000, help="characters per stream")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per round")
    parser.add_argument("--smoke", action="store_true", help="tiny model, short streams, one round")
    args = parser.parse_args()
    if args.smoke:
        args.length, args.hidden, args.layers, args.rounds, args.clients = 300, 32, 1, 1, "1,4"
    counts = [min(int(c), 32) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab = make_run(Path(tmp), args.hidden, args.layers)
        proc, host, port = start_server(Path(tmp))
        try:
            asyncio.run(load_round(host, port, 1, 10, args.timeout))  # load the model before timing
            print(f"{args.layers}x{args.hidden} LSTM, vocab {len(vocab)}, {args.length} chars per stream, "
                  f"T=0.8, best of {args.rounds} rounds; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
            print(f"{'clients':>7} {'server chars/s':>15} {'generate_batch':>15} {'ratio':>6} {'ttfc median':>12} "
                  f"{'ttfc p99':>9} {'errors':>6} {'differ':>6}")
            failed = 0
            for clients in counts:
                served, base, ttfc, errors, differ = 0.0, 0.0, [], 0, 0
                for _ in range(args.rounds):
                    got = asyncio.run(load_round(host, port, clients, args.length, args.timeout))
                    rate, texts = baseline_round(model, vocab, clients, args.length)
                    served, base = max(served, got["chars_per_s"]), max(base, rate)
                    ttfc += got["ttfc"]
                    errors += got["errors"]
                    differ = max(differ, sum(a != b for a, b in zip(got["texts"], texts, strict=True)))
                failed += errors
                print(f"{clients:>7} {served:>15,.0f} {base:>15,.0f} {served / base:>6.2f} "
                      f"{statistics.median(ttfc) * 1000:>10.1f}ms {p99(ttfc) * 1000:>7.1f}ms {errors:>6} {differ:>6}")
        finally:
            proc.terminate()
            proc.wait(20)
    if failed:
        raise SystemExit(f"{failed} streams failed")


if __name__ == "__main__":
    main()
