"""Generations running in several threads of one process, on one loaded model, as a web playground
would run them: each gets exactly the text it gets alone (no process-wide switch is flipped under
another generation, and the shared cache of folded weights is locked)."""

from __future__ import annotations

import threading

import torch

from charrnn import checkpoint
from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.sample import Decoding, beam_search, generate_batch, inspect_steps, stream
from charrnn.vocab import Vocab

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nAy me!\n"


def jobs(model, vocab):
    """Eight different generations: NumPy and torch engines, filters, streaming, inspection, beams."""
    long_prime = TEXT * 40  # warms through several model calls
    return [
        lambda: [s.text for s in generate_batch(model, vocab, 300, prime="ROMEO:", seed=1,
                                                decoding=Decoding(temperature=0.8))],
        lambda: [s.text for s in generate_batch(model, vocab, 120, num_samples=64, prime="JULIET:", seed=2,
                                                decoding=Decoding(temperature=1.0))],  # torch + oneDNN
        lambda: [s.text for s in generate_batch(model, vocab, 300, num_samples=3, prime=long_prime, seed=3,
                                                decoding=Decoding(top_k=5, top_p=0.9, epsilon=0.1))],
        lambda: "".join(stream(model, vocab, 400, prime="But", seed=4, decoding=Decoding(temperature=1.2))),
        lambda: [v.chosen for v in inspect_steps(model, vocab, 200, prime="Ay", seed=5,
                                                 decoding=Decoding(repetition_penalty=1.5))],
        lambda: [b.text for b in beam_search(model, vocab, 60, width=4, num_return=2, prime="ROMEO:")],
        lambda: [s.text for s in generate_batch(model, vocab, 200, num_samples=8, prime="", seed=7,
                                                decoding=Decoding(greedy=True, repetition_penalty=2.0))],
        lambda: [s.text for s in generate_batch(model, vocab, 300, prime="what", seed=8, backend="torch",
                                                decoding=Decoding(temperature=0.7))],  # torch at batch 1
    ]


def run_together(work: list) -> list:
    """Start every job at the same moment, each in its own thread; their results in order."""
    results: list = [None] * len(work)
    start = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work[i]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_eight_threads_on_one_model_get_the_texts_each_gets_alone(tmp_path):
    torch.manual_seed(5)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=16, hidden_size=64, num_layers=2, dropout=0.0))
    for p in model.parameters():
        p.data.normal_(0.0, 0.3)
    checkpoint.save(tmp_path / checkpoint.BEST, model, {"model_config": model.config.to_dict(),
                                                        "vocab": vocab.to_list()})
    ckpt = checkpoint.load(tmp_path)  # one loaded model shared by every thread
    work = jobs(ckpt.model, ckpt.vocab)
    alone = [job() for job in work]
    onednn = torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()
    for _ in range(2):
        together = run_together(work)
        for i, (a, b) in enumerate(zip(alone, together, strict=True)):
            assert a == b, f"job {i} differs when run beside the others"
    assert (torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()) == onednn
