"""The sampling benchmark runs end to end (tiny model, a few steps): it stays runnable."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "sample_speed.py"


def test_sample_speed_smoke_runs_and_reports_every_ratio():
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for fragment in ("numpy_minimal", "torch_eager", "numpy_batched", "torch_onednn", "vs numpy_minimal",
                     "vs torch_eager", "vs the faster baseline", "paired", "engine picked", "decoding chain alone"):
        assert fragment in out.stdout, out.stdout
