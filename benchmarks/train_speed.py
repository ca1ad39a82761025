"""Trainer throughput against a bare training loop of the same model, measured in one run.

The bare loop is the floor of what any trainer can do: forward + backward + optimizer step on
pre-made tensors, nothing else. The trainer run includes everything a real run pays for: data
windows, the lr schedule, clipping, per-step metrics, evaluations, checkpoints and plots.
The bare loop runs before and after the trainer, and their mean is the baseline (so a machine
that speeds up or slows down during the run shows as a spread, not as a false ratio).

    python benchmarks/train_speed.py                      # the cpu10 preset model, 300 steps
    python benchmarks/train_speed.py --smoke              # tiny and quick (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn.config import PRESETS, ModelConfig, TrainConfig
from charrnn.model import CharRNN
from charrnn.runtime import autocast, resolve_device, resolve_precision, seed_everything
from charrnn.train import Trainer


def synthetic_text(n_chars: int) -> str:
    """Play-like text with a realistic character distribution, for when no corpus is given."""
    gen = torch.Generator().manual_seed(0)
    words = ["the", "and", "my", "lord", "to", "of", "I", "you", "that", "is", "with", "not", "his", "be",
             "your", "for", "have", "thou", "me", "what", "shall", "ROMEO:", "JULIET:", "KING", "\n", ",", "."]
    idx = torch.randint(0, len(words), (n_chars // 3,), generator=gen).tolist()
    return " ".join(words[i] for i in idx)[:n_chars]


def bare_loop(model_cfg: ModelConfig, train_cfg: TrainConfig, steps: int, device: torch.device,
              precision: str) -> float:
    """chars/s of forward + backward + optimizer step on pre-made tensors."""
    seed_everything(0)
    model = CharRNN(model_cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    b, t = train_cfg.batch_size, train_cfg.seq_len
    x = torch.randint(0, model_cfg.vocab_size, (b, t), device=device)
    y = torch.randint(0, model_cfg.vocab_size, (b, t), device=device)

    def step() -> None:
        with autocast(device, precision):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, model_cfg.vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(min(10, steps)):  # oneDNN builds its primitives on the first calls
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * b * t / (time.perf_counter() - start)


def trainer_run(text: str, model_cfg: ModelConfig, train_cfg: TrainConfig, steps: int, run_dir: Path) -> tuple[float, int]:
    """chars/s of the real trainer over `steps` timed steps (after the same warm-up as the bare loop)."""
    warm = min(10, steps)
    trainer = Trainer(text, run_dir, model_cfg, train_cfg.replace(max_steps=warm))
    trainer.run()  # warm-up, with its own evaluation and save, not timed
    trainer.cfg = train_cfg.replace(max_steps=warm + steps)
    trainer.record.history = {k: [] for k in trainer.record.history}  # the timed part evaluates on its own schedule
    start = time.perf_counter()
    result = trainer.run()
    elapsed = time.perf_counter() - start
    return steps * train_cfg.batch_size * train_cfg.seq_len / elapsed, len(result.history["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu10", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--corpus", type=Path, default=None, help="text to train on (default: synthetic)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps: checks the script runs")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    preset = PRESETS[args.preset]
    text = args.corpus.read_text(encoding="utf-8") if args.corpus else synthetic_text(1_200_000)
    vocab_size = len(set(text))
    model_cfg = ModelConfig.from_dict({**preset["model"], "vocab_size": vocab_size})
    train_cfg = TrainConfig.from_dict({**preset["train"], "time_budget": None, "max_steps": args.steps,
                                       "device": args.device, "precision": args.precision})
    steps = args.steps
    if args.smoke:
        model_cfg = ModelConfig(vocab_size=vocab_size, embed_dim=8, hidden_size=32, num_layers=1, dropout=0.0)
        train_cfg = train_cfg.replace(batch_size=8, seq_len=32, eval_interval=10, sample_length=20)
        steps = 20
        text = text[:60_000]
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)

    before = bare_loop(model_cfg, train_cfg, steps, device, precision)
    with tempfile.TemporaryDirectory() as tmp:
        trainer_rate, evals = trainer_run(text, model_cfg, train_cfg, steps, Path(tmp) / "run")
    after = bare_loop(model_cfg, train_cfg, steps, device, precision)
    baseline = (before + after) / 2
    ratio = trainer_rate / baseline
    report = {"model": f"{model_cfg.num_layers}x{model_cfg.hidden_size} {model_cfg.model}",
              "batch": train_cfg.batch_size, "seq_len": train_cfg.seq_len, "precision": precision,
              "threads": torch.get_num_threads(), "steps": steps, "evaluations": evals,
              "bare_before": round(before), "bare_after": round(after), "trainer": round(trainer_rate),
              "ratio": round(ratio, 3)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"model {report['model']}, batch {report['batch']} x seq {report['seq_len']}, {precision}, "
              f"{report['threads']} threads, {steps} timed steps ({evals} evaluations in the trainer run)")
        print(f"  bare loop   {before:>10,.0f} chars/s (before)  {after:>10,.0f} chars/s (after)")
        print(f"  trainer     {trainer_rate:>10,.0f} chars/s")
        print(f"  ratio trainer / bare = {ratio:.3f}")
    sys.exit(0)


if __name__ == "__main__":
    main()
