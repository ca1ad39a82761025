"""`charrnn cache list|clear`: the corpus cache's entries, and removal that spares entries in use."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from conftest import one_error_line

from charrnn.cli import main
from charrnn.corpus_cache import CorpusFiles

HOLD = """
import sys
from charrnn.corpus_cache import CorpusFiles
corpus = CorpusFiles([sys.argv[1]], cache_dir=sys.argv[2])
corpus.load()
print("loaded", flush=True)
sys.stdin.read()  # hold the entry (as a training run does) until the test closes stdin
"""


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _corpora(tmp_path):
    a, b = tmp_path / "alpha.txt", tmp_path / "beta.txt"
    a.write_text("to be or not to be " * 50, encoding="utf-8")
    b.write_text("all the world's a stage " * 80, encoding="utf-8")
    return a, b


def test_cache_list_shows_each_corpus_its_size_and_last_use(tmp_path):
    cache = tmp_path / "cache"
    a, b = _corpora(tmp_path)
    CorpusFiles([a], cache_dir=cache).load()
    CorpusFiles([b], cache_dir=cache).load()
    table = run(["cache", "list", "--cache-dir", cache])
    assert table.exit_code == 0, table.output
    assert str(a.resolve()) in table.stdout and str(b.resolve()) in table.stdout
    assert "2 entries" in table.stderr
    rows = [json.loads(line) for line in run(["cache", "list", "--cache-dir", cache, "--format", "jsonl"]).stdout.splitlines()]
    assert sorted(r["corpus"] for r in rows) == sorted([str(a.resolve()), str(b.resolve())])
    assert all(r["size_bytes"] > 950 and r["last_use"] for r in rows)  # at least the ids (1 byte a char)


def test_cache_clear_spares_an_entry_a_running_process_holds(tmp_path):
    cache = tmp_path / "cache"
    a, b = _corpora(tmp_path)
    CorpusFiles([b], cache_dir=cache).load()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(a), str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "loaded"
        result = run(["cache", "clear", "--cache-dir", cache])
        assert result.exit_code == 0, result.output
        assert "removed beta-" in result.stdout
        assert "kept alpha-" in result.stdout and "in use by a running run" in result.stdout
        assert [p.name.split("-")[0] for p in cache.iterdir()] == ["alpha"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    again = run(["cache", "clear", "alpha", "--cache-dir", cache])  # the run ended: now it goes
    assert "removed alpha-" in again.stdout, again.output
    assert list(cache.iterdir()) == []
    # and a corpus used again after a clear is simply encoded again
    assert CorpusFiles([a], cache_dir=cache).load().train_ids.size > 0


def test_cache_clear_of_an_unknown_name_is_one_error_line(tmp_path):
    cache = tmp_path / "cache"
    a, _ = _corpora(tmp_path)
    CorpusFiles([a], cache_dir=cache).load()
    one_error_line(run(["cache", "clear", "nosuch", "--cache-dir", cache]), "nosuch", "alpha-")
    assert len(list(cache.iterdir())) == 1
