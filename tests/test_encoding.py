"""Every command writes UTF-8 whatever the terminal's encoding claims (README: non-UTF-8 terminals).

Real `charrnn` processes (forked from a zygote started under the encoding, so each command enters
through the CLI's own entry point) run with PYTHONIOENCODING=ascii or latin-1 and LC_ALL=C, and print
characters those encodings lack (an em dash, a euro sign): the corpus, the prime, a run folder's name,
an error message. The sweep, the slowest, runs under one of them.
"""

from __future__ import annotations

import pytest
from training_procs import TINY, Zygote

VERSE = ("ROMEO:\n¿Qué pasó, señor? — ¡Ay! O Romeo, Romeo, wherefore art thou Romeo?\n\n"
         "JULIET:\nBut soft, what light through yonder window breaks? Ça suffit.\n\n")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_every_command_writes_utf8_to_a_terminal_that_claims_another_encoding(tmp_path, encoding):
    text = tmp_path / "play.txt"
    text.write_text(VERSE * 40, encoding="utf-8")
    run = tmp_path / "run-€"  # printed by train
    commands = [  # (argv, exit code, text the output must hold)
        (["train", text, "--out", run, *TINY, "--max-steps", 4, "--eval-interval", 2, "--sample-length", 60],
         0, "run-€"),
        (["sample", "-c", run, "-n", 40, "--seed", 1, "--prime", "¿Qué"], 0, "¿Qué"),
        (["sample", "-c", run, "-n", 5, "--seed", 1, "--prime", "¿Qué", "--show-top", 3], 0, "¿Qué"),
        (["sample", "-c", run, "-n", 20, "--seed", 1, "--prime", "¿Qué", "--num-samples", 2, "--format", "jsonl"],
         0, "seed 1"),
        (["inspect", "-c", run, "-n", 5, "-k", 2, "--seed", 1, "--prime", "— ¡Ay"], 0, "— ¡Ay"),
        (["score", text, "-c", run, "--per-char", "-"], 0, "—"),
        (["data", "get", "shakespeare", "--mirror", tmp_path / "no-such-€"], 1, "no-such-€"),
        (["sample", "-c", run, "--prime", "€uro"], 1, "'€'"),
    ]
    if encoding == "ascii":
        commands.append((["sweep", "-c", run, "--temperatures", "0.5,1", "--num-samples", 1, "--length", 30,
                          "--no-greedy", "--prime", "— ¿Qué", "--out", tmp_path / "sweep-€"], 0, "sweep-€"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONIOENCODING", encoding)
        env.setenv("LC_ALL", "C")
        env.delenv("LANG", raising=False)
        with Zygote(tmp_path / "cache") as zygote:
            for i, (argv, code, expected) in enumerate(commands):
                log = tmp_path / f"{i}.log"
                zygote.start(argv, tmp_path, log)
                exit_code = zygote.wait()
                output = log.read_bytes().decode("utf-8")  # UTF-8, whatever the terminal claimed
                assert "Traceback" not in output and "UnicodeEncodeError" not in output, (argv[0], output)
                assert exit_code == code, (argv, output)
                assert expected in output, (argv, output)
                errors = [line for line in output.splitlines() if line.startswith("Error")]
                assert len(errors) == (1 if code else 0), (argv, output)
