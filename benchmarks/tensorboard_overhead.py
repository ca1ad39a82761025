"""What --tensorboard costs a training step, measured against the step itself in one run.

Times (a) training steps of the `quick` preset's model (2x256 LSTM, batch 32 x seq 100, what
`charrnn train` runs on a CPU by default) and (b) the TensorBoard listener handling the progress
event the trainer sends every --log-interval steps (5 scalars), and prints the listener's cost per
training step as a fraction of the step (best of --repeats rounds each, so load from other
programs, which can only slow a round down, weighs least). The import of tensorboard is timed too
(paid once per run).

    python benchmarks/tensorboard_overhead.py            # ~1 minute on 2 idle cores
    python benchmarks/tensorboard_overhead.py --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch

from charrnn.config import PRESETS, ModelConfig, TrainConfig
from charrnn.tensorboard_log import TensorBoardLog
from charrnn.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.events, args.repeats = 3, 200, 1
    torch.set_num_threads(1)
    quick = PRESETS["quick"]
    text = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east.\n\n" * 2000)
    cfg = TrainConfig(**{**quick["train"], "time_budget": None, "max_steps": 10**6, "device": "cpu",
                         "precision": "fp32", "sample_length": 0})
    trainer = Trainer(text, tempfile.mkdtemp(), ModelConfig(**quick["model"]), cfg)
    trainer.train_step()  # warm-up
    step_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        step_s.append((time.perf_counter() - t0) / args.steps)
    tb = TensorBoardLog(tempfile.mkdtemp())
    tb({"event": "start", "run_dir": tempfile.mkdtemp(), "model_config": trainer.model_config.to_dict(),
        "train_config": cfg.to_dict(), "params": 1, "vocab_size": len(trainer.vocab), "resumed_at": 0})
    event_s = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.events):
            tb({"event": "step", "step": r * args.events + i, "train_loss": 1.5, "lr": 1e-3, "grad_norm": 0.5,
                "chars_per_sec": 5e4})
        event_s.append((time.perf_counter() - t0) / args.events)
    tb.close()
    code = "import time; t = time.perf_counter(); import torch.utils.tensorboard; print(time.perf_counter() - t)"
    base = "import torch"
    imported = float(subprocess.run([sys.executable, "-c", f"{base}; {code}"], capture_output=True, text=True,
                                    check=True).stdout)
    per_step = min(event_s) / cfg.log_interval
    print(f"training step (quick preset, 1 thread): {min(step_s) * 1e3:.1f} ms")
    print(f"listener per progress event: {min(event_s) * 1e6:.0f} us, every {cfg.log_interval} steps")
    print(f"overhead per step: {per_step * 1e6:.0f} us = {per_step / min(step_s) * 100:.3f}% of a step")
    print(f"importing torch.utils.tensorboard (once per run): {imported:.2f} s")


if __name__ == "__main__":
    main()
