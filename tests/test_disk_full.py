"""A full disk, for real, at every writer: one line naming the user's file, the previous file intact.

The failures are the kernel's, not a patched function: the process's RLIMIT_FSIZE makes every write
past N bytes fail with EFBIG ("File too large"), the way a full disk fails with ENOSPC, and it needs
no privileges (a small tmpfs would, and `mount` is refused to most users; the last test uses one where
it can, and is skipped elsewhere). Whole commands run in
real `charrnn` processes forked from a zygote; the library writers that no command can reach alone
(meta.json, `data get`, whose corpora must match a pinned sha256) run in a forked child.

Each case: the command fails (exit 1) with exactly one `Error:` line naming the file the user knows,
no traceback, the previous version of that file byte for byte, and no temporary file anywhere.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from training_procs import TINY, Zygote, child_env

from charrnn import checkpoint, corpora
from charrnn.errors import CharRNNError


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    with Zygote(tmp_path_factory.mktemp("zygote-cache")) as z:
        yield z


def run(zygote, argv, cwd: Path, limit: int | None = None) -> tuple[int, str]:
    log = cwd / f"log-{len(list(cwd.glob('log-*')))}.txt"
    zygote.start(argv, cwd, log, file_size_limit=limit)
    code = zygote.wait()
    return code, log.read_text(encoding="utf-8")


def one_error(code: int, output: str, *fragments: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output and "enforce fail" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert ".tmp" not in errors[0], errors[0]  # the user's file, never our temporary name
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith((".tmp", ".part", ".download"))]


def in_a_child_limited_to(limit: int, write) -> str:
    """Run `write()` in a forked child whose files cannot grow past `limit` bytes; its error, or ""."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only file writes and Python, no torch work, so forking is safe
        message = ""
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            try:
                write()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_end, message.encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode("utf-8")
    os.waitpid(pid, 0)
    return message


def test_a_checkpoint_that_does_not_fit_is_one_line_not_torchs_zip_writer_traceback(zygote, tmp_path):
    # Tensors larger than the write buffer go straight to the disk; when one fails half-way, torch's
    # zip writer used to replace the OSError with "RuntimeError: [enforce fail at inline_container.cc]
    # unexpected pos ..." and 48 lines of traceback.
    text, run_dir = tmp_path / "play.txt", tmp_path / "run"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 120, encoding="utf-8")
    big = [*TINY, "--hidden-size", 128]  # 1x128: weights of 256 kB in one tensor
    code, output = run(zygote, ["train", text, "--out", run_dir, *big, "--max-steps", 2, "--eval-interval", 2], tmp_path)
    assert code == 0, output
    before = snapshot(run_dir)
    assert min(len(before["best.pt"]), len(before["last.pt"])) > 200_000
    code, output = run(zygote, ["train", text, "--resume", run_dir, "--max-steps", 4, "-q"], tmp_path, limit=100_000)
    one_error(code, output, f"could not write checkpoint {run_dir / 'best.pt'}: File too large",
              "the previous checkpoint is unchanged")
    after = snapshot(run_dir)
    for name in ("best.pt", "last.pt", "meta.json", "losses.png"):
        assert after[name] == before[name], name
    assert temp_files(run_dir) == []
    code, output = run(zygote, ["train", text, "--resume", run_dir, "--max-steps", 4, "-q"], tmp_path)
    assert code == 0, output  # room again: the run goes on from its last save
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 4


def test_a_loss_plot_that_does_not_fit_is_a_warning_naming_it_and_the_old_plot_stays(zygote, tmp_path):
    # The plot is the one file whose failure does not stop training (the checkpoints are what matter);
    # it is named, and the previous figure is kept whole.
    text, run_dir = tmp_path / "play.txt", tmp_path / "run"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 120, encoding="utf-8")
    # Enough steps that the figure has curves to draw: it is then the largest file a run writes.
    code, output = run(zygote, ["train", text, "--out", run_dir, *TINY, "--max-steps", 20, "--eval-interval", 10],
                       tmp_path)
    assert code == 0, output
    before = snapshot(run_dir)
    others = max(len(data) for name, data in before.items() if name != "losses.png")
    limit = (others + len(before["losses.png"])) // 2
    assert others + 2000 < limit < len(before["losses.png"])
    code, output = run(zygote, ["train", text, "--resume", run_dir, "--max-steps", 24], tmp_path, limit=limit)
    assert code == 0 and "Traceback" not in output, output
    assert f"warning: could not draw the loss plot: [Errno 27] File too large: '{run_dir / 'losses.png'}'" in output
    assert (run_dir / "losses.png").read_bytes() == before["losses.png"]
    assert checkpoint.load(run_dir / "last.pt").meta["step"] == 24
    assert temp_files(run_dir) == []


def test_sweep_outputs_that_do_not_fit_name_the_file_and_keep_the_previous_one(zygote, tmp_path):
    text, run_dir, out = tmp_path / "play.txt", tmp_path / "run", tmp_path / "sweep"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 120, encoding="utf-8")
    assert run(zygote, ["train", text, "--out", run_dir, *TINY, "--max-steps", 2, "--eval-interval", 2], tmp_path)[0] == 0
    sweep = ["sweep", "-c", run_dir, "--temperatures", "0.5,1", "--num-samples", 1, "--length", 40, "--out", out]
    code, output = run(zygote, [*sweep, "--seed", 1], tmp_path)
    assert code == 0, output
    before = snapshot(out)
    # Every text output fits; the first figure (sweep.png) does not.
    texts = max(len(data) for name, data in before.items() if not name.endswith((".png", ".svg", ".html")))
    limit = (texts + len(before["sweep.png"])) // 2
    assert texts < limit < len(before["sweep.png"])
    code, output = run(zygote, [*sweep, "--seed", 2], tmp_path, limit=limit)
    one_error(code, output, str(out / "sweep.png"), "File too large")
    assert (out / "sweep.png").read_bytes() == before["sweep.png"]
    assert temp_files(out) == []


def test_a_corpus_cache_that_does_not_fit_names_the_way_out_and_leaves_no_half_written_ids(zygote, tmp_path):
    # A changed corpus makes its old ids stale (the cache drops them by design), so what must hold is
    # that no half-written id file is left to be taken for a whole one, and that the next run rebuilds.
    text, cache = tmp_path / "play.txt", tmp_path / "cache"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 120, encoding="utf-8")
    train = ["train", text, *TINY, "--max-steps", 1, "--cache-dir", cache]
    assert run(zygote, [*train, "--out", tmp_path / "run1", "-q"], tmp_path)[0] == 0
    with open(text, "a", encoding="utf-8") as f:  # the corpus changed: its ids are encoded again
        f.write("JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n" * 40)
    code, output = run(zygote, [*train, "--out", tmp_path / "run2", "-q"], tmp_path, limit=2000)
    one_error(code, output, f"could not write the encoded corpus {cache}", "File too large", "--cache-dir")
    assert temp_files(cache) == [] and not list(cache.rglob("*.bin"))
    code, output = run(zygote, [*train, "--out", tmp_path / "run2"], tmp_path)
    assert code == 0 and "encoded" in output, output


def test_meta_json_that_does_not_fit_names_it_and_keeps_the_previous_one(tmp_path):
    checkpoint.write_meta(tmp_path, {"step": 1, "history": []})
    before = (tmp_path / "meta.json").read_bytes()
    error = in_a_child_limited_to(4096, lambda: checkpoint.write_meta(tmp_path, {"step": 2, "history": [0.5] * 4000}))
    assert error == f"CharRNNError: could not write {tmp_path / 'meta.json'}: File too large", error
    assert (tmp_path / "meta.json").read_bytes() == before
    assert temp_files(tmp_path) == []


def test_data_get_on_a_full_disk_names_the_corpus_file_and_keeps_the_previous_copy(tmp_path):
    # `data get` streams the download into the data folder; a write that fails there is about the
    # user's file, not "download failed".
    body = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 400
    source = tmp_path / "input.txt"
    source.write_bytes(body)
    sha = corpora.hashlib.sha256(body).hexdigest()
    data = tmp_path / "data"
    data.mkdir()
    dest = data / "shakespeare.txt"
    dest.write_bytes(b"an older copy\n")
    error = in_a_child_limited_to(8192, lambda: corpora.download(source.as_uri(), dest, sha))
    assert error == f"CharRNNError: could not write {dest}: File too large", error
    assert dest.read_bytes() == b"an older copy\n"
    assert temp_files(data) == []
    # with room, the corpus is written with a plain file's mode (not a temporary file's 0600)
    assert corpora.download(source.as_uri(), dest, sha).read_bytes() == body
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_a_library_error_hiding_the_disk_error_is_unwrapped(tmp_path):
    # What torch's zip writer does, reduced: its clean-up fails after the disk did, raising its own
    # error while handling the OSError. The user must read the disk's reason, about their file.
    from charrnn.atomic import atomic_write

    (tmp_path / "best.pt").write_bytes(b"previous")

    def write(f):
        try:
            raise OSError(28, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 21184 vs 21136")

    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(tmp_path / "best.pt", write)
    assert caught.value.filename == str(tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == b"previous" and temp_files(tmp_path) == []
    with pytest.raises(CharRNNError, match="is not"):  # our own errors pass through as they are
        atomic_write(tmp_path / "best.pt", lambda f: (_ for _ in ()).throw(CharRNNError("is not what we want")))


_FILL_THEN_RESUME = r"""
set -e
mount -t tmpfs -o size=2m tmpfs "$MNT"
cp -a "$RUN" "$MNT/run"
cat /dev/zero > "$MNT/filler" 2>/dev/null || true   # the disk is full...
truncate -s -100000 "$MNT/filler"                  # ...but for 100 kB
set +e
"$PYTHON" -m charrnn train "$TEXT" --resume "$MNT/run" --max-steps 4 -q > "$LOG" 2>&1
echo $? > "$CODE"
cp -a "$MNT/run" "$AFTER"
"""


def test_a_really_full_disk_enospc_on_a_small_tmpfs(zygote, tmp_path):
    # The same as the first test with the real thing, where it can be had: a 2 MB tmpfs, mounted in
    # a private mount namespace (gone when the process ends), filled up but for 100 kB.
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs '{tmp_path}'"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (unshare/mount refused); the RLIMIT_FSIZE cases above run anyway")
    text, run_dir = tmp_path / "play.txt", tmp_path / "run"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 120, encoding="utf-8")
    code, output = run(zygote, ["train", text, "--out", run_dir, *TINY, "--hidden-size", 128, "--max-steps", 2,
                                "--eval-interval", 2], tmp_path)
    assert code == 0, output
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**child_env(), "MNT": str(mnt), "RUN": str(run_dir), "TEXT": str(text), "PYTHON": sys.executable,
           "LOG": str(tmp_path / "full.log"), "CODE": str(tmp_path / "code"), "AFTER": str(tmp_path / "after")}
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _FILL_THEN_RESUME], env=env,
                   check=True, timeout=600)
    output = (tmp_path / "full.log").read_text(encoding="utf-8")
    one_error(int((tmp_path / "code").read_text()), output,
              f"could not write checkpoint {mnt / 'run' / 'best.pt'}: No space left on device",
              "the previous checkpoint is unchanged")
    before, after = snapshot(run_dir), snapshot(tmp_path / "after")
    for name in ("best.pt", "last.pt", "meta.json", "losses.png"):
        assert after[name] == before[name], name
    assert temp_files(tmp_path / "after") == []
