"""Real `charrnn` training processes for fault tests, started cheaply.

Importing torch costs seconds per process, so a test that kills training ten times would spend
most of its time starting Python. A `Zygote` is one helper process that imports charrnn (and
torch, matplotlib) once and then forks a fresh child per command; each child runs the real CLI
(`charrnn.cli.main`) in its own process, with its own pid, so SIGKILL / SIGTERM / SIGINT reach a
real training process exactly as they would from a shell. The zygote never runs torch code itself,
so forking it is safe (no thread pools exist yet).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TINY = ["--embed-dim", "8", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4",
        "--seq-len", "16", "--device", "cpu", "--sample-length", "0", "--precision", "fp32",
        "--warmup-steps", "2", "--decay-steps", "400", "--lr", "0.01"]

_ZYGOTE = r"""
import io, json, os, signal, sys
import torch, matplotlib
matplotlib.use("Agg")
import charrnn.cli, charrnn.train, charrnn.plots, charrnn.sample

def kill_during_save(n):
    # The n-th torch.save writes half its bytes, makes them durable, then the process is SIGKILLed:
    # a kill in the middle of a checkpoint write, every time rather than by luck.
    real, count = torch.save, [0]
    def save(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] == n:
            buf = io.BytesIO()
            real(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *args, **kwargs)
    torch.save = save

def ctrl_c_twice_inside_save(n):
    # The n-th torch.save is hit by two Ctrl-Cs while torch's zip writer (C++) is in the middle of
    # the file, inside one of its calls back to Python's write(): a user pressing Ctrl-C twice
    # mid-save, at the worst moment, every time rather than by luck.
    real, count = torch.save, [0]
    class Interrupted:
        def __init__(self, f):
            self.f, self.writes = f, 0
        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                signal.raise_signal(signal.SIGINT); signal.raise_signal(signal.SIGINT)
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
    def save(obj, f, *args, **kwargs):
        count[0] += 1
        return real(obj, Interrupted(f) if count[0] == n else f, *args, **kwargs)
    torch.save = save

def stall_first_checkpoint_fsync(marker, seconds=120.0):
    # A write that hangs: the first fsync of a checkpoint's temporary file waits. `marker` appears when
    # it starts, so a test can signal the process while it is certainly in the middle of that write.
    # (A real fsync runs the handler when it returns; this wait, like a slow network disk's, is cut short.)
    import time
    real, stalled = os.fsync, [False]
    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if not stalled[0] and name.startswith((".best.pt.", ".last.pt.")):
            stalled[0] = True
            open(marker, "w").close()
            # In short naps: a signal the kernel hands to another of the process's threads (OpenMP's,
            # OpenBLAS's) does not cut one long sleep short, and its handler would wait for the end.
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.02)
            print("slow disk: the stalled fsync finished", flush=True)
        return real(fd)
    os.fsync = fsync

print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1); os.dup2(log, 2)
            devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(devnull, 0)
            sys.stdin = open(os.devnull)
            if job.get("kill_on_save"):
                kill_during_save(job["kill_on_save"])
            if job.get("ctrl_c_twice_on_save"):
                ctrl_c_twice_inside_save(job["ctrl_c_twice_on_save"])
            if job.get("stall_marker"):
                stall_first_checkpoint_fsync(job["stall_marker"])
            if job.get("sigint_ignored"):  # started by a script as `charrnn ... &`: the shell ignores SIGINT for it
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            else:  # as from a terminal, whatever the disposition pytest itself was started with
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if job.get("file_size_limit"):  # writes past it fail with EFBIG (Python ignores SIGXFSZ)
                import resource
                resource.setrlimit(resource.RLIMIT_FSIZE, (job["file_size_limit"], resource.RLIM_INFINITY))
            try:
                charrnn.cli.main.main(args=job["argv"], prog_name="charrnn")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
    print("exit", code, flush=True)
"""


def child_env() -> dict[str, str]:
    # One thread: tiny models gain nothing from two, and on a busy machine a second OpenMP thread
    # that is not scheduled makes every step wait for it.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def one_thread():
    """The same single-thread setting for in-process runs compared bit for bit with child runs."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Zygote:
    """Forks real `charrnn` CLI processes on demand (see the module docstring)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        env = child_env()
        if cache_dir is not None:  # encoded-corpus cache of the children: never the user's home
            env["CHARRNN_CACHE_DIR"] = str(cache_dir)
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self._read() == "ready"
        self.pid: int | None = None

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the zygote process died")
        return line.strip()

    def start(self, argv: list, cwd: Path, log: Path, kill_on_save: int | None = None,
              ctrl_c_twice_on_save: int | None = None, stall_marker: Path | None = None,
              file_size_limit: int | None = None, sigint_ignored: bool = False) -> int:
        """Fork a child running `charrnn <argv>` in `cwd`, its output going to `log`; returns its pid.

        `kill_on_save=n`: SIGKILL in the middle of the n-th checkpoint write. `ctrl_c_twice_on_save=n`:
        two SIGINTs inside torch's serialisation of the n-th checkpoint. `stall_marker=path`: the first
        checkpoint fsync hangs (a slow disk) and `path` is created when it starts. `file_size_limit=n`:
        no file can grow past n bytes (a full disk, for the files that grow). `sigint_ignored`: the
        child starts with SIGINT ignored, as a script's background job does; otherwise with Python's
        own Ctrl-C handler, as from a terminal.
        """
        assert self.pid is None, "one child at a time"
        job = {"argv": [str(a) for a in argv], "cwd": str(cwd), "log": str(log), "kill_on_save": kill_on_save,
               "ctrl_c_twice_on_save": ctrl_c_twice_on_save,
               "stall_marker": None if stall_marker is None else str(stall_marker), "file_size_limit": file_size_limit,
               "sigint_ignored": sigint_ignored}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        kind, pid = self._read().split()
        assert kind == "pid"
        self.pid = int(pid)
        return self.pid

    def wait(self) -> int:
        """The child's exit code (negative -N: killed by signal N)."""
        kind, code = self._read().split()
        assert kind == "exit"
        self.pid = None
        return int(code)

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(condition, timeout: float = 900.0, what: str = "condition", poll: float = 0.01) -> None:
    """Poll `condition()` until it is true; fail after `timeout` seconds (slow shared machines)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def metric_rows(run_dir: Path) -> list[dict]:
    """The complete lines of metrics.jsonl (a line torn by a kill is skipped, as resume does)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows
