import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "contention.py"


def test_contention_benchmark_runs_in_smoke_mode():
    """Every variant in a fresh process beside a busy one, ratios to the best, and a verdict."""
    env = {k: v for k, v in os.environ.items() if k != "CHARRNN_THREADS"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--workloads", "sample-1", "--json"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["variants"] == ["before", "passive", "1-thread", "auto"]
    [row] = report["results"]
    assert row["workload"] == "sample-1" and row["busy"] == 1
    assert all(rate > 0 for rate in row["rates"].values())
    assert max(row["ratios"].values()) == 1.0
    assert row["pass"] == (row["ratios"]["auto"] >= row["need"] == 0.8)
    assert report["passed"] == row["pass"]
