import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


def test_train_speed_benchmark_runs_in_smoke_mode():
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", "--precision", "fp32"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["trainer"] > 0 and report["bare_before"] > 0 and report["bare_after"] > 0
    baseline = (report["bare_before"] + report["bare_after"]) / 2
    assert abs(report["ratio"] - report["trainer"] / baseline) < 0.01
    assert report["evaluations"] >= 1  # the trainer run pays for its evaluations
