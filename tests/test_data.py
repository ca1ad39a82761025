import numpy as np
import pytest
import torch

from charrnn.data import StreamBatcher, encode, id_dtype, read_text, split, stream_rows
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab


def test_split_is_contiguous_by_position():
    ids = np.arange(1000)
    train, val = split(ids, 0.1)
    assert len(val) == 100 and np.array_equal(np.concatenate([train, val]), ids)
    assert val[0] == 900  # the last 10% of the text


def test_batchify_rows_are_contiguous_streams():
    streams = stream_rows(np.arange(26), 4)
    assert streams.shape == (4, 6)
    assert streams[1].tolist() == [6, 7, 8, 9, 10, 11]


def test_window_k_plus_1_continues_window_k_in_every_stream():
    ids = np.arange(10_000)
    batcher = StreamBatcher.from_ids(ids, batch_size=8, seq_len=20, seed=3)
    for epoch in (0, 1, 2):
        prev_x = prev_y = None
        for index in range(batcher.windows_per_epoch):
            x, y = batcher.window(epoch, index)
            assert x.shape == y.shape == (8, 20)
            assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next characters
            if prev_y is not None:
                # the first input of window k+1 is the last target of window k, row by row
                assert torch.equal(x[:, 0], prev_y[:, -1])
                assert torch.equal(x[:, 0] - prev_x[:, -1], torch.ones(8, dtype=torch.long))
            prev_x, prev_y = x, y


@pytest.mark.parametrize("seed", [0, 2**63 - 1])  # every seed the CLI accepts
def test_every_seed_gives_epoch_offsets(seed):
    batcher = StreamBatcher.from_ids(np.arange(10_000), batch_size=8, seq_len=20, seed=seed)
    offsets = [batcher.offset(epoch) for epoch in range(1, 4)]
    assert offsets == [batcher.offset(epoch) for epoch in range(1, 4)]  # deterministic
    assert all(0 <= o < 20 for o in offsets)


def test_epochs_shift_window_boundaries_deterministically():
    ids = np.arange(50_000) % 200
    a = StreamBatcher.from_ids(ids, 4, 50, seed=1)
    b = StreamBatcher.from_ids(ids, 4, 50, seed=1)
    assert [a.offset(e) for e in range(6)] == [b.offset(e) for e in range(6)]
    assert len({a.offset(e) for e in range(1, 20)}) > 1


def test_too_short_for_one_batch_says_what_fits():
    with pytest.raises(CharRNNError, match="too few for one batch.*--batch-size"):
        StreamBatcher.from_ids(np.arange(100), batch_size=8, seq_len=50)


def test_ids_use_the_smallest_dtype():
    assert encode("abc", Vocab.from_text("abc")).dtype == np.uint8
    assert id_dtype(300) == np.uint16 and id_dtype(70_000) == np.uint32


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "is empty"), (b"\xff\xfe\xfa bad", "not valid utf-8.*--encoding"),
     (b"ab\x00\x01\x02", "binary")],
)
def test_read_text_errors(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CharRNNError, match=message):
        read_text(path)


def test_read_text_directory_and_missing_known_corpus(tmp_path):
    with pytest.raises(CharRNNError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(CharRNNError, match="charrnn data get shakespeare"):
        read_text(tmp_path / "shakespeare.txt")


def test_read_text_other_encoding(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("señor".encode("latin-1"))
    assert read_text(path, encoding="latin-1") == "señor"
