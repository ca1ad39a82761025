"""Corpora bigger than memory and made of many files (charrnn.corpus_cache): the memory-mapped id
file, the cache's reuse and rebuild rules, directories/globs/several files, and the CLI over them."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint, corpus_cache
from charrnn.cli import main
from charrnn.config import ModelConfig, TrainConfig
from charrnn.corpus_cache import CorpusFiles, EncodedCorpus, parse_separator, resolve_inputs
from charrnn.errors import CharRNNError
from charrnn.train import Trainer, train
from charrnn.vocab import Vocab

TINY_MODEL = ModelConfig(vocab_size=1, embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
FAST = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16",
        "--max-steps", "6", "--eval-interval", "3", "--device", "cpu", "--precision", "fp32", "--sample-length", "0"]


def _cfg(**changes):
    base = TrainConfig(batch_size=8, seq_len=16, max_steps=6, time_budget=None, eval_interval=3, warmup_steps=0,
                       lr=1e-2, device="cpu", precision="fp32", sample_length=0, log_interval=2)
    return base.replace(**changes)


def _wide_text(n_chars: int) -> str:
    """English-like lines sprinkled with 400 CJK characters: a vocabulary of well over 256."""
    rng = np.random.default_rng(0)
    words = np.array("the quick brown fox jumps over a lazy dog while seven wizards hum".split())
    cjk = np.array([chr(0x4E00 + i) for i in range(400)])
    lines = n_chars // 45 + 1
    english = rng.choice(words, (lines, 9))
    wide = rng.choice(cjk, (lines, 6))
    text = "\n".join(" ".join(e) + " " + "".join(w) for e, w in zip(english, wide, strict=True))
    assert len(text) >= n_chars
    return text[:n_chars]


def test_multi_megabyte_corpus_with_wide_vocabulary_is_memory_mapped(tmp_path):
    text = _wide_text(4_500_000)  # ~5.3 MB of UTF-8
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 5_000_000
    data = CorpusFiles([path], cache_dir=tmp_path / "cache").load(val_frac=0.01)
    assert len(data.vocab) > 256 and data.vocab == Vocab.from_text(text)
    assert data.train_ids.dtype == np.uint16 and isinstance(data.train_ids, np.memmap)
    assert os.path.getsize(data.info["id_file"]) == 2 * len(text)  # two bytes a character, nothing else
    assert len(data.train_ids) == int(len(text) * 0.99)
    assert data.vocab.decode(data.train_ids[:500]) == text[:500]
    assert data.vocab.decode(data.val_ids[-500:]) == text[-500:]
    # The trainer windows the memory-mapped file directly: it never copies the corpus.
    trainer = Trainer(data, tmp_path / "run", TINY_MODEL, _cfg(max_steps=3, eval_interval=3))
    assert np.shares_memory(trainer.batcher.streams, data.train_ids)
    assert np.shares_memory(trainer.val, data.val_ids)
    result = trainer.run()
    assert result.step == 3 and result.best_val_loss is not None
    assert checkpoint.load(tmp_path / "run").meta["corpus"]["sha256"] == data.info["sha256"]


def test_cached_corpus_trains_exactly_like_the_text(tmp_path, tiny_text):
    path = tmp_path / "play.txt"
    path.write_text(tiny_text, encoding="utf-8")
    from_text = train(tiny_text, tmp_path / "text", TINY_MODEL, _cfg(max_steps=12, eval_interval=6))
    from_files = train(CorpusFiles([path], cache_dir=tmp_path / "cache"), tmp_path / "files", TINY_MODEL,
                       _cfg(max_steps=12, eval_interval=6))
    assert from_text.history["val_loss"] == from_files.history["val_loss"]
    a = checkpoint.load(tmp_path / "text" / "last.pt")
    b = checkpoint.load(tmp_path / "files" / "last.pt")
    assert a.meta["corpus"]["sha256"] == b.meta["corpus"]["sha256"]  # the same hash of the same text
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])


def test_cache_is_reused_rehashed_or_rebuilt(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcdefghij" * 100, encoding="utf-8")
    cache = tmp_path / "cache"
    corpus = CorpusFiles([path], cache_dir=cache)
    first = corpus.load(val_frac=0.1)
    assert corpus.last_status == "built"
    id_file = first.info["id_file"]
    built_at = os.stat(id_file).st_mtime_ns

    again = CorpusFiles([path], cache_dir=cache)  # a new run on the same corpus
    again.load(val_frac=0.1)
    assert again.last_status == "reused" and os.stat(id_file).st_mtime_ns == built_at

    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # touched, same content: re-hashed, not re-encoded
    again.load(val_frac=0.1)
    assert again.last_status == "rehashed" and os.stat(id_file).st_mtime_ns == built_at

    path.write_text("abcdefghiX" * 100, encoding="utf-8")  # same size, new content
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    changed = again.load(val_frac=0.1)
    assert again.last_status == "built"
    assert "X" in changed.vocab and changed.vocab.decode(changed.train_ids[:10]) == "abcdefghiX"
    assert changed.info["sha256"] != first.info["sha256"]


def test_a_damaged_cache_is_encoded_again_not_fed_to_the_model(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("abcdefghij" * 100, encoding="utf-8")
    first = CorpusFiles([path], cache_dir=tmp_path / "cache").load(val_frac=0.1)
    id_file = Path(first.info["id_file"])
    scans = []
    real_scan = corpus_cache.ids_in_range
    monkeypatch.setattr(corpus_cache, "ids_in_range", lambda *a: scans.append(a) or real_scan(*a))
    CorpusFiles([path], cache_dir=tmp_path / "cache").load(val_frac=0.1)
    assert scans == []  # an id file as it was written is trusted: starting a run stays cheap
    id_file.write_bytes(b"\xff" * id_file.stat().st_size)  # same size, ids no character has
    warnings = []
    again = CorpusFiles([path], cache_dir=tmp_path / "cache", log=warnings.append)
    loaded = again.load(val_frac=0.1)
    assert again.last_status == "built"
    assert any("damaged" in e.get("message", "") for e in warnings)
    assert loaded.vocab.decode(loaded.train_ids[:10]) == "abcdefghij"
    assert len(scans) == 1


def _tree(root):
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("first file\n", encoding="utf-8")
    (root / "b" / "c.md").write_text("second one\n", encoding="utf-8")
    (root / "b" / "d.txt").write_text("third, the last\n", encoding="utf-8")
    (root / ".hidden.txt").write_text("never read\n", encoding="utf-8")
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    return root


def test_directory_joins_its_text_files_in_path_order(tmp_path):
    root = _tree(tmp_path / "corpus")
    events = []
    corpus = CorpusFiles.from_paths([root], cache_dir=tmp_path / "cache", separator="|", val_split="end",
                                    log=events.append)
    assert [p.relative_to(root).as_posix() for p in corpus.files] == ["a.txt", "b/c.md", "b/d.txt"]
    assert any("blob.bin" in e.get("message", "") for e in events if e["event"] == "warning")
    data = corpus.load(val_frac=0.25)
    joined = "first file\n|second one\n|third, the last\n"
    assert data.vocab.decode(np.concatenate([data.train_ids, data.val_ids])) == joined
    assert data.vocab.decode(data.val_ids) == joined[int(len(joined) * 0.75):]  # from the end


def test_per_file_validation_takes_the_end_of_every_file(tmp_path):
    root = _tree(tmp_path / "corpus")
    data = CorpusFiles.from_paths([root], cache_dir=tmp_path / "cache", separator="|").load(val_frac=0.5)
    texts = ["first file\n", "second one\n", "third, the last\n"]
    heads = [t[: int(len(t) * 0.5)] for t in texts]
    tails = [t[int(len(t) * 0.5):] for t in texts]
    assert data.vocab.decode(data.train_ids) == "|".join(heads)
    assert data.vocab.decode(data.val_ids) == "|".join(tails)


def test_several_files_and_a_glob_name_the_same_files(tmp_path):
    root = _tree(tmp_path / "corpus")
    by_glob, _ = resolve_inputs([str(root / "**" / "*.txt")])
    assert [p.name for p in by_glob] == ["a.txt", "d.txt"]  # sorted; empty and hidden files passed over
    listed, _ = resolve_inputs([root / "b" / "d.txt", root / "a.txt"])
    assert [p.name for p in listed] == ["d.txt", "a.txt"]  # the order given
    assert parse_separator(r"\n--\n") == "\n--\n" and parse_separator(r"\\n") == "\\n"


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "is a directory with no text files"),
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"text\x00\x01"), "binary"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"ok \xff\xfe bad"), "not valid utf-8"),
])
def test_unusable_inputs_are_one_clear_error(tmp_path, make, fragment):
    target = tmp_path / "input.txt"
    make(target)
    with pytest.raises(CharRNNError, match=fragment):
        CorpusFiles.from_paths([target], cache_dir=tmp_path / "cache").load()


def test_glob_without_matches(tmp_path):
    with pytest.raises(CharRNNError, match="no files match"):
        resolve_inputs([str(tmp_path / "*.txt")])


def test_cli_trains_on_a_directory(tmp_path, monkeypatch):
    root = tmp_path / "essays"
    root.mkdir()
    for i in range(3):
        (root / f"e{i}.txt").write_text(f"essay number {i}: " + "how to start a startup. " * 40, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(root), *FAST], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "read 3 file(s)" in result.output and "encoded" in result.output
    meta = json.loads((tmp_path / "checkpoints" / "essays" / "meta.json").read_text(encoding="utf-8"))
    assert meta["corpus"]["files"] == 3 and meta["corpus"]["val_split"] == "per-file"
    assert "\n" in meta["vocab"]  # the default separator, a blank line, is part of the vocabulary
    # Resuming reads the same cache entry again instead of re-encoding.
    again = CliRunner().invoke(main, ["train", str(root), "--resume", "checkpoints/essays", "--max-steps", "9"],
                               catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "encoded" not in again.output and "resuming at step 6" in again.output


def test_fine_tuning_on_files_with_new_characters_extends_the_vocabulary(tmp_path, tiny_text):
    train(tiny_text, tmp_path / "base", TINY_MODEL, _cfg())
    path = tmp_path / "new.txt"
    path.write_text(tiny_text.replace("e", "€"), encoding="utf-8")
    from charrnn.train import fine_tune

    result = fine_tune(CorpusFiles([path], cache_dir=tmp_path / "cache"), tmp_path / "tuned", tmp_path / "base", _cfg())
    tuned = checkpoint.load(tmp_path / "tuned")
    assert tuned.vocab.chars[-1] == "€" and tuned.vocab.chars[:-1] == sorted(set(tiny_text))
    assert result.best_val_loss is not None


def test_ids_you_already_have(tmp_path):
    vocab = Vocab(list("ab\n"))
    ids = np.memmap(tmp_path / "ids.bin", dtype=np.uint8, mode="w+", shape=(4000,))
    ids[:] = np.tile(np.array([0, 1, 1, 2], dtype=np.uint8), 1000)
    ids.flush()
    data = EncodedCorpus.from_ids(np.memmap(tmp_path / "ids.bin", dtype=np.uint8, mode="r"), vocab)
    result = train(data, tmp_path / "run", TINY_MODEL, _cfg())
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    with pytest.raises(CharRNNError, match=r"ids must lie in \[0, 3\)"):
        EncodedCorpus.from_ids(np.array([0, 3]), vocab)


@pytest.mark.parametrize("encoding, raw", [
    ("utf-8", "\ufeffRoméo, ¿qué? — 中文 ok\n".encode() * 5),  # a BOM, then multi-byte characters
    ("latin-1", "señor, à bientôt\n".encode("latin-1") * 5),
    ("utf-16", "wide 中文 text\n".encode("utf-16") * 1),
])
def test_streaming_reads_agree_with_read_text_across_block_boundaries(tmp_path, monkeypatch, encoding, raw):
    from charrnn import corpus_inputs
    from charrnn.corpus_cache import sha256_text
    from charrnn.data import read_text

    monkeypatch.setattr(corpus_inputs, "BLOCK_BYTES", 5)  # every multi-byte character straddles a block edge
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    text = read_text(path, encoding=encoding)
    data = CorpusFiles([path], encoding=encoding, cache_dir=tmp_path / "cache").load(val_frac=0.2)
    assert data.vocab == Vocab.from_text(text)
    assert data.vocab.decode(np.concatenate([data.train_ids, data.val_ids])) == text
    assert data.info["sha256"] == sha256_text(text)
