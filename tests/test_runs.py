"""`charrnn runs`: the run folders under a directory, from their meta.json, tolerant of anything else."""

import json
import math

from click.testing import CliRunner

from charrnn import config_file
from charrnn.cli import main
from charrnn.runs import list_runs
from charrnn.train import fine_tune, resume, train


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_runs_lists_trained_resumed_and_fine_tuned_runs_and_survives_junk(tmp_path, tiny_text, tiny_model_config,
                                                                         tiny_train_config):
    root = tmp_path / "checkpoints"
    cfg = tiny_train_config.replace(max_steps=10, eval_interval=5)
    base = train(tiny_text, root / "base", tiny_model_config, cfg)
    resume(tiny_text, root / "base", max_steps=20)
    fine_tune(tiny_text.upper(), root / "tuned", root / "base", cfg)
    (root / "torn").mkdir()
    (root / "torn" / "meta.json").write_text('{"model_config": {"model": "ls', encoding="utf-8")  # killed mid-write
    (root / "torn" / "last.pt").write_bytes(b"")
    (root / "notes").mkdir()  # not a run at all: passed over
    (root / "notes" / "todo.txt").write_text("x", encoding="utf-8")
    (root / "foreign").mkdir()
    (root / "foreign" / "meta.json").write_text('["something", "else"]', encoding="utf-8")

    found = {r.name: r for r in list_runs(root)}
    assert set(found) == {"base", "tuned", "torn", "foreign"}
    b = found["base"]
    assert (b.model, b.num_layers, b.hidden_size, b.steps) == ("lstm", 1, 32, 20)
    assert b.resumed and b.fine_tuned_from is None and b.corpus is None  # the library was given no corpus name
    assert b.parameters == sum(p.numel() for p in __import__("charrnn").load(root / "base").model.parameters())
    assert b.best_val_bits == b.best_val_loss / math.log(2) and b.best_val_loss <= base.best_val_loss
    assert b.elapsed > 0 and b.updated
    t = found["tuned"]
    assert t.fine_tuned_from.endswith("best.pt") and not t.resumed and t.steps == 10
    assert "unreadable" in found["torn"].problem and "not a charrnn run" in found["foreign"].problem
    # the library writes config.toml too: a fine-tuning run records its source, not an architecture
    tuned = config_file.read(root / "tuned" / "config.toml")
    assert tuned["init_from"] == t.fine_tuned_from and "hidden_size" not in tuned and tuned["dropout"] == 0.0
    assert config_file.read(root / "base" / "config.toml")["hidden_size"] == 32

    by_loss = [r.name for r in list_runs(root, sort="loss")]
    assert by_loss[-2:] == sorted(["torn", "foreign"])  # runs without a loss go last
    assert by_loss[:2] == sorted(["base", "tuned"], key=lambda n: found[n].best_val_loss)

    table = run(["runs", root, "--sort", "name"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("RUN") and [line.split()[0] for line in lines[1:]] == ["base", "foreign", "torn", "tuned"]
    assert "lstm 1x32" in lines[1] and f"{b.best_val_loss:.4f} / {b.best_val_bits:.3f}" in lines[1]
    assert "resumed" in lines[1] and "fine-tuned from" in lines[4]
    rows = [json.loads(line) for line in run(["runs", root, "--format", "jsonl"]).stdout.splitlines()]
    assert {r["name"] for r in rows} == set(found) and all("best_val_bits" in r for r in rows)


def test_runs_of_a_folder_without_runs_says_so(tmp_path):
    result = run(["runs", tmp_path / "nothing-here"])
    assert result.exit_code == 0 and result.stdout == "" and "no runs" in result.stderr
