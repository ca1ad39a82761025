import json
import pickle

import pytest
import torch

from charrnn import checkpoint
from charrnn.atomic import atomic_write
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


def _meta(cfg: ModelConfig, vocab: Vocab) -> dict:
    return {"format_version": checkpoint.FORMAT_VERSION, "model_config": cfg.to_dict(), "vocab": vocab.to_list(),
            "history": {"step": [1], "val_loss": [2.0]}}


@pytest.fixture
def saved(tmp_path):
    vocab = Vocab.from_text("hello, wörld\n")
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=6, hidden_size=12, num_layers=2, model="gru")
    torch.manual_seed(0)
    model = CharRNN(cfg).eval()
    path = checkpoint.save(tmp_path / "best.pt", model, _meta(cfg, vocab))
    return model, vocab, path


def test_a_failed_write_names_the_file_asked_for_unless_the_error_is_about_another(tmp_path):
    def no_space(f):
        raise OSError(28, "No space left on device")  # no file named: it is about the one being written

    def font_missing(f):
        raise FileNotFoundError(2, "No such file or directory", "/usr/share/fonts/x.ttf")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "out.png", no_space)
    assert caught.value.filename == str(tmp_path / "out.png")
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(tmp_path / "out.png", font_missing)
    assert caught.value.filename == "/usr/share/fonts/x.ttf"
    with pytest.raises(FileNotFoundError) as caught:  # a missing folder: the file asked for, not a temp name
        atomic_write(tmp_path / "nowhere" / "out.png", lambda f: f.write(b"x"))
    assert caught.value.filename == str(tmp_path / "nowhere" / "out.png")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_save_load_gives_identical_logits(saved, tmp_path):
    model, vocab, path = saved
    ckpt = checkpoint.load(tmp_path)  # a run folder resolves to best.pt
    assert ckpt.vocab == vocab and ckpt.model_config == model.config
    idx = torch.randint(0, len(vocab), (3, 9))
    torch.testing.assert_close(ckpt.model(idx)[0], model(idx)[0], rtol=0, atol=0)


def test_checkpoint_with_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "meta": Payload(), "model": {}}, path)
    with pytest.raises(CharRNNError, match="refusing .*Python objects"):
        checkpoint.load(path)
    assert not marker.exists()
    with open(path, "wb") as f:  # a raw pickle, not even a torch zip file
        pickle.dump(Payload(), f)
    with pytest.raises(CharRNNError):
        checkpoint.load(path)
    assert not marker.exists()


def test_truncated_and_garbage_files_are_refused(saved, tmp_path):
    _, _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CharRNNError, match="not a readable charrnn checkpoint"):
        checkpoint.load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CharRNNError):
        checkpoint.load(garbage)


def test_newer_format_and_inconsistent_metadata_are_refused(saved, tmp_path):
    model, vocab, _ = saved
    cfg = model.config
    checkpoint.save(tmp_path / "new.pt", model, {**_meta(cfg, vocab)})
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(CharRNNError, match="newer than this charrnn"):
        checkpoint.load(tmp_path / "new.pt")
    bad_vocab = {**_meta(cfg, vocab), "vocab": vocab.to_list()[:-1]}
    checkpoint.save(tmp_path / "bad.pt", model, bad_vocab)
    with pytest.raises(CharRNNError, match="vocabulary has"):
        checkpoint.load(tmp_path / "bad.pt")


def test_missing_checkpoint_and_atomic_write_leave_no_temp_files(tmp_path, saved):
    with pytest.raises(CharRNNError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CharRNNError, match="holds no checkpoint"):
        checkpoint.load(tmp_path / "empty_dir")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_meta_json_is_plain_and_readable(tmp_path):
    checkpoint.write_meta(tmp_path, {"vocab": ["a", "é"], "step": 3})
    assert json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))["vocab"] == ["a", "é"]
    assert "é" in (tmp_path / "meta.json").read_text(encoding="utf-8")


def test_find_latest_picks_newest_run(tmp_path, saved):
    model, vocab, _ = saved
    import os
    for i, name in enumerate(["old", "new"]):
        (tmp_path / "runs" / name).mkdir(parents=True)
        p = checkpoint.save(tmp_path / "runs" / name / "best.pt", model, _meta(model.config, vocab))
        os.utime(p, (1000 + i, 1000 + i))
    assert checkpoint.find_latest(tmp_path / "runs").name == "new"
    with pytest.raises(CharRNNError, match="no trained run"):
        checkpoint.find_latest(tmp_path / "nothing")
