"""Command-line interface: parse options, call the library, print. No work happens here.

torch is imported inside the commands, so `charrnn --help` answers instantly.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .config import PRESETS, ModelConfig, TrainConfig, parse_duration
from .errors import CharRNNError
from .sweep import SweepConfig

CHECKPOINT_ROOT = "checkpoints"
_SWEEP_DEFAULTS = SweepConfig()  # the dataclass is the single source of the sweep's defaults
# `train` stopped by a signal saves everything, then exits with the shell's code for that signal
# (128 + signal number), so scripts can tell "finished" (0) from "stopped early, resumable".
STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class _Group(click.Group):
    """Turns library errors into one line and a non-zero exit instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharRNNError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `charrnn sample | head` closed the pipe: not an error
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except MemoryError:
            raise click.ClickException("out of memory; try a smaller --batch-size or model") from None
        except OSError as exc:  # the file system refused (disk full, permissions, I/O): say what and where
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except CharRNNError as exc:
        raise click.BadParameter(str(exc)) from None


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn", message="charrnn %(version)s")
def main() -> None:
    """charrnn: train character-level LSTM/GRU/RNN models on text and sample from them.

    \b
    charrnn data get shakespeare      put tiny Shakespeare at data/shakespeare.txt
    charrnn train data/shakespeare.txt
    charrnn sample -t 0.5             sample the most recent run
    """


# ----------------------------------------------------------------------------------------------
# train


class _Progress:
    """The live progress line (rewritten in place on a terminal, throttled lines otherwise)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.val = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "warning":
            click.echo(f"warning: {event['message']}", err=True)
        elif kind == "stopping":  # the answer to a Ctrl-C, quiet or not: the final evaluation can take a while
            click.echo(f"{chr(10) if self.tty else ''}{event['signal']} at step {event['step']}: evaluating and saving "
                       "a resumable checkpoint (Ctrl-C again stops at once and keeps the last save)", err=True)
        if self.quiet:
            return
        if kind == "start":
            m, t = event["model_config"], event["train_config"]
            budget = f", time budget {_fmt_time(t['time_budget'])}" if t["time_budget"] else ""
            steps = f", max {t['max_steps']} steps" if t["max_steps"] else ""
            resumed = f", resuming at step {event['resumed_at']}" if event["resumed_at"] else ""
            procs = f" x {event['world_size']} processes" if event.get("world_size", 1) > 1 else ""
            regularised = "".join(f", {label} {value:g}" for label, value in (
                ("dropout", m.get("dropout", 0)), ("weight drop", m.get("weight_drop", 0)), ("EMA", t.get("ema", 0)))
                if value)
            click.echo(f"{m['num_layers']}x{m['hidden_size']} {m['model'].upper()} "
                       f"({event['params'] / 1e6:.2f}M params, vocab {event['vocab_size']}{regularised}) on "
                       f"{event['device']}{procs} ({event['precision']}), batch {t['batch_size']} x seq {t['seq_len']}, "
                       f"lr {t['lr']:g}{budget}{steps}{resumed} -> {event['run_dir']}", err=True)
        elif kind == "corpus":  # preparing the memory-mapped id file (corpus_cache)
            click.echo(event["message"], err=True)
        elif kind == "step":
            now = time.monotonic()
            if not self.tty and now - self.last_print < 10:
                return
            self.last_print = now
            val = f"{event['best_val_loss']:.3f}" if event["best_val_loss"] is not None else "-"
            filled = int(round(20 * event.get("done_frac", 0.0)))
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
            line = (f"{bar}step {event['step']:>6} | epoch {event['epoch']:.2f} | train {event['train_loss']:.3f} | "
                    f"best val {val} | {event['chars_per_sec'] / 1000:.1f}k chars/s | "
                    f"{_fmt_time(event['elapsed'])} elapsed, {_fmt_time(event['time_left'])} left")
            click.echo(("\r" + line + "\x1b[K") if self.tty else line, err=True, nl=not self.tty)
        elif kind == "sample":
            prefix = "\n" if self.tty else ""
            click.echo(f"{prefix}sample at step {event['step']}:\n  | " + event["sample"].replace("\n", "\n  | "), err=True)
        elif kind == "eval":
            mark = " (best, saved)" if event["improved"] else ""
            prefix = "\n" if self.tty else ""
            click.echo(f"{prefix}step {event['step']:>6} | val {event['val_loss']:.4f} nats/char "
                       f"({event['val_bits']:.3f} bits){mark}", err=True)
            if event.get("sample"):
                click.echo("  | " + event["sample"].replace("\n", "\n  | "), err=True)


def _runs_dir_for(text_file: str) -> Path:
    stem = Path(text_file.rstrip("/\\")).stem or "run"
    base = Path(CHECKPOINT_ROOT) / stem
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{stem}-{n}")
    return candidate


@main.command()
@click.argument("text_files", nargs=-1, required=True, metavar="TEXT...")
@click.option("--preset", type=click.Choice(["auto", *PRESETS]), default="auto", show_default=True,
              help="Named configuration (see README); every flag below overrides it. "
                   "auto: gpu on CUDA, else by --time-budget (quick <= 5m, cpu10 <= 20m, cpu30).")
@click.option("--model", type=click.Choice(["lstm", "gru", "rnn"]), default=None, help="Recurrent core.  [default: lstm]")
@click.option("--embed-dim", type=click.IntRange(1, 65536), default=None, help="Character embedding size.")
@click.option("--hidden-size", type=click.IntRange(1, 65536), default=None, help="Units per recurrent layer.")
@click.option("--num-layers", type=click.IntRange(1, 64), default=None, help="Recurrent layers.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="Dropout between layers and before the head.")
@click.option("--weight-drop", type=click.FloatRange(0, 1, max_open=True), default=None, help="DropConnect on the recurrent weights while training (AWD-LSTM).  [default: 0]")
@click.option("--tie-weights/--no-tie-weights", default=None, help="Share embedding and head weights (needs --embed-dim = --hidden-size).")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None, help="Contiguous streams per step.")
@click.option("--seq-len", type=click.IntRange(1, 1 << 20), default=None, help="Characters per BPTT window.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="Peak learning rate (Adam).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None, help="Decay after warm-up.  [default: cosine]")
@click.option("--min-lr-frac", type=click.FloatRange(0, 1), default=None, help="Where the cosine ends, as a fraction of --lr.  [default: 0.1]")
@click.option("--warmup-steps", type=click.IntRange(0), default=None, help="Linear learning-rate warm-up steps.")
@click.option("--decay-steps", type=click.IntRange(1), default=None, help="Steps over which the cosine decays (fixes the schedule across resumes).  [default: the whole run]")
@click.option("--weight-decay", type=click.FloatRange(0), default=None, help="AdamW weight decay.")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None, help="Evaluate, keep and sample a moving average of the weights with this decay, e.g. 0.999 (0: off).  [default: 0]")
@click.option("--grad-clip", type=click.FloatRange(0, min_open=True), default=None, help="Clip the gradient's global norm to this.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many steps.")
@click.option("--time-budget", callback=_duration, default=None, help="Stop after this much wall clock, evaluation included (90s, 10m, 1h).")
@click.option("--eval-interval", type=click.IntRange(1), default=None, help="Steps between full validation passes.")
@click.option("--log-interval", type=click.IntRange(1), default=None, help="Steps between progress updates.")
@click.option("--val-frac", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="Share of the text (its end) held out for validation.  [default: 0.1]")
@click.option("--patience", type=click.IntRange(1), default=None, help="Stop after this many evaluations without improvement.")
@click.option("--stateful/--no-stateful", default=None, help="Carry the hidden state across windows (truncated BPTT).  [default: stateful]")
@click.option("--state-reset-prob", type=click.FloatRange(0, 1), default=None, help="Chance per stream and window of restarting from the zero state, so samples start well from short primes.  [default: 0.1]")
@click.option("--sample-interval", type=click.IntRange(0), default=None, help="Steps between samples in the log (0: a sample at each evaluation).")
@click.option("--sample-length", type=click.IntRange(0, 100_000), default=None, help="Characters of sample printed at each evaluation (0: none).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None, help="bf16 autocast where the hardware is fast at it.  [default: auto]")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps.  [default: auto]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed for initialisation and dropout.  [default: 1337]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.  [default: checkpoints/<corpus name>]")
@click.option("--resume", "resume_run", type=click.Path(path_type=Path), default=None, help="Continue the run in this folder exactly where it stopped.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, help="Start from a trained run's weights (fine-tuning on TEXT).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--separator", default="\\n\\n", show_default=True, help="Joins consecutive files of a corpus (escapes \\n \\t \\\\ understood).")
@click.option("--val-split", type=click.Choice(["per-file", "end"]), default="per-file", show_default=True, help="Validation from the end of each file, or from the end of the joined text.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where encoded corpora are kept.  [default: $CHARRNN_CACHE_DIR, else ~/.cache/charrnn]")
@click.option("--ddp", is_flag=True, help="Insist on a multi-process run (started by torchrun --nproc_per_node N -m charrnn train ...); under torchrun DDP is used with or without it.")
@click.option("-q", "--quiet", is_flag=True, help="Only the final summary.")
def train(text_files: tuple[str, ...], preset: str, out: Path | None, resume_run: Path | None, init_from: Path | None,
          encoding: str, separator: str, val_split: str, cache_dir: Path | None, ddp: bool, quiet: bool,
          **flags: Any) -> None:
    """Train a model on TEXT and keep its best checkpoint.

    TEXT is a UTF-8 text file, several files, a directory (every text file in it, recursively) or a
    glob; files are joined with --separator and encoded once into a memory-mapped cache. Launched by
    torchrun (torchrun --nproc_per_node N -m charrnn train ...) it trains on N processes with DDP.
    """
    from . import train as training
    from .corpus_cache import CorpusFiles, parse_separator, run_name
    from .distributed import is_main_process, launched_by_torchrun

    if ddp and not launched_by_torchrun():
        raise CharRNNError("--ddp needs several processes: launch with torchrun --nproc_per_node N -m charrnn train ...")
    main_process = is_main_process()  # under torchrun only rank 0 prints
    progress = _Progress(quiet or not main_process)
    flags = {k: v for k, v in flags.items() if v is not None}
    model_keys = {f for f in ModelConfig.__dataclass_fields__} - {"vocab_size"}
    model_flags = {k: v for k, v in flags.items() if k in model_keys}
    train_flags = {k: v for k, v in flags.items() if k not in model_keys}
    if resume_run is not None:  # options that would be ignored are refused before the corpus is read
        if init_from is not None or model_flags:
            raise CharRNNError("--resume continues a run as it was; it takes no --init-from or model options")
        if out is not None or click.get_current_context().get_parameter_source("preset").name != "DEFAULT":
            raise CharRNNError(f"--resume continues the run in {resume_run} with its own settings; "
                               "it takes no --out or --preset")
        if resume_run.is_file():
            if resume_run.name != "last.pt":
                raise CharRNNError(f"--resume takes a run folder (the one holding last.pt), not the file {resume_run}")
            resume_run = resume_run.parent
    text = CorpusFiles.from_paths(text_files, encoding=encoding, separator=parse_separator(separator),
                                  val_split=val_split, cache_dir=cache_dir, log=progress if main_process else None)
    corpus: dict[str, Any] = {"path": str(Path(text_files[0]).resolve()), "name": Path(text_files[0]).name}
    if len(text_files) > 1:
        corpus["inputs"] = [str(Path(p).resolve()) for p in text_files]
    if resume_run is not None:
        with _process_group():
            result = training.resume(text, resume_run, log=progress, **train_flags)
    else:
        architecture = sorted(set(model_flags) - {"dropout", "weight_drop"})
        if init_from is not None and architecture:
            names = ", ".join("--" + k.replace("_", "-") for k in architecture)
            raise CharRNNError(f"--init-from keeps the trained model's architecture; drop {names} "
                               "(only --dropout and --weight-drop can change)")
        model_config, train_config = _configs(preset, model_flags, train_flags)
        run_dir = out or _runs_dir_for(run_name(text_files))
        _refuse_overwrite(run_dir, explicit=out is not None)
        with _process_group():
            if init_from is not None:
                result = training.fine_tune(text, run_dir, init_from, train_config,
                                            dropout=model_flags.get("dropout"), weight_drop=model_flags.get("weight_drop"),
                                            corpus=corpus, log=progress)
            else:
                result = training.train(text, run_dir, model_config, train_config, corpus=corpus, log=progress)
    if main_process:
        _summary(result)


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """Under torchrun the trainer joins the process group; leave it when training ends."""
    from .distributed import shutdown

    try:
        yield
    finally:
        shutdown()


def _configs(preset: str, model_flags: dict[str, Any], train_flags: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    if preset == "auto":
        from .config import preset_for
        from .runtime import resolve_device

        preset = preset_for(resolve_device(train_flags.get("device", "auto")).type, train_flags.get("time_budget"))
    chosen = PRESETS[preset]
    model_config = ModelConfig.from_dict({**chosen["model"], **model_flags})
    train_values = {**chosen["train"], **train_flags}
    if "max_steps" in train_flags and "time_budget" not in train_flags:
        train_values["time_budget"] = None  # an explicit step limit replaces the preset's clock
    return model_config, TrainConfig.from_dict(train_values)


def _refuse_overwrite(run_dir: Path, explicit: bool) -> None:
    if explicit and any((run_dir / name).exists() for name in ("best.pt", "last.pt")):
        raise CharRNNError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, "
                           "or choose another --out")


def _summary(result: Any) -> None:
    if result.best_val_loss is None:
        click.echo(f"stopped ({result.stop_reason}) after {result.step} steps without an evaluation", err=True)
        return
    click.echo(f"done ({result.stop_reason}): best val loss {result.best_val_loss:.4f} nats/char "
               f"({result.best_val_bits:.3f} bits/char) at step {result.best_step}, "
               f"{result.step} steps in {_fmt_time(result.elapsed)}; saved in {result.run_dir}/", err=True)
    click.echo(f"sample it: charrnn sample -c {result.run_dir} -t 0.5", err=True)
    if result.stop_reason in STOP_EXIT_CODES:
        click.echo(f"stopped by {result.stop_reason}; continue with: charrnn train TEXT --resume {result.run_dir}",
                   err=True)
        click.get_current_context().exit(STOP_EXIT_CODES[result.stop_reason])


# ----------------------------------------------------------------------------------------------
# sample


def _checkpoint_dir(checkpoint: Path | None) -> Path:
    from .checkpoint import find_latest

    if checkpoint is not None:
        return checkpoint
    run = find_latest(CHECKPOINT_ROOT)
    click.echo(f"using the most recent run: {run}", err=True)
    return run


def _decoding_options(func: Any) -> Any:
    """The decoding chain's options, shared by `sample` and `inspect`."""
    options = [
        click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]"),
        click.option("-n", "--length", type=int, default=1000, show_default=True, help="Characters to generate (at most)."),
        click.option("-t", "--temperature", type=float, default=None, help="Softmax temperature; 0 means greedy.  [default: 0.8]"),
        click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax)."),
        click.option("--top-k", type=int, default=None, help="Sample only among the K most likely characters."),
        click.option("--top-p", type=float, default=None, help="Nucleus: sample among the fewest characters holding this much probability (0 < P <= 1)."),
        click.option("--epsilon", type=float, default=0.0, help="ε-greedy: with this probability take the most likely character, else sample."),
        click.option("--repetition-penalty", type=float, default=1.0, help="Divide the probability of characters generated in the last --repetition-window by this (>= 1; breaks loops)."),
        click.option("--repetition-window", type=int, default=20, show_default=True, help="How many recent characters the penalty looks back."),
        click.option("--stop", multiple=True, help=r"End right after this string (repeatable; escapes like '\n\n' work)."),
        click.option("--prime", default=None, help="Text to warm the hidden state with."),
        click.option("--prime-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Read the prime from this file (several lines are fine)."),
        click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of --prime-file."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Same seed, same text.  [default: random, printed]"),
        click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with prime characters the model never saw."),
        click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps."),
    ]
    for option in reversed(options):  # decorators apply bottom-up
        func = option(func)
    return func


def _setup(checkpoint: Path | None, device: str, prime: str | None, prime_file: Path | None, encoding: str,
           stop: tuple[str, ...], unknown: str, seed: int | None, temperature: float | None,
           **decoding: Any) -> tuple[Any, str, list[str], int, Any]:
    """Load the model and turn the shared options into library arguments, all of them checked:
    the output starts only once nothing in the input can fail any more."""
    from .checkpoint import load
    from .data import read_text
    from .runtime import resolve_device
    from .sample import Decoding, check_stops, prime_ids, unescape

    if prime is not None and prime_file is not None:
        raise CharRNNError("give --prime or --prime-file, not both")
    _refuse_ignored_decoding(temperature, decoding)
    prime_text = read_text(prime_file, encoding=encoding) if prime_file is not None else (prime or "")
    stops = [unescape(s) for s in stop]
    settings = Decoding(temperature=0.8 if temperature is None else temperature, **decoding)
    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    prime_ids(ckpt.vocab, prime_text, unknown)
    check_stops(stops, ckpt.vocab)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    return ckpt, prime_text, stops, seed, settings


def _refuse_ignored_decoding(temperature: float | None, decoding: dict[str, Any]) -> None:
    """Greedy decoding takes the most likely character: options that shape a draw would be ignored."""
    from .sample import GREEDY_BELOW

    if not (decoding["greedy"] or (temperature is not None and temperature < GREEDY_BELOW)):
        return
    ignored = [name for name, used in (("--top-k", decoding["top_k"] is not None),
                                       ("--top-p", decoding["top_p"] is not None),
                                       ("--epsilon", bool(decoding["epsilon"])),
                                       ("--temperature", decoding["greedy"] and bool(temperature)))
               if used]
    if ignored:
        how = "--greedy" if decoding["greedy"] else f"-t {temperature:g}"
        raise CharRNNError(f"{how} always takes the most likely character, so {', '.join(ignored)} would do "
                           "nothing; drop it, or sample with a temperature > 0")


@main.command()
@_decoding_options
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples, generated together in one batched pass (seeds SEED, SEED+1, ...).")
@click.option("--beam", type=int, default=None, help="Beam search of this width: the most likely continuation(s) instead of a sample.")
@click.option("--length-penalty", type=float, default=1.0, show_default=True, help="Beam ranking: log-probability / length**this (1 = per-character mean).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True, help="jsonl: one JSON object per sample (text, seed, temperature, strategy, logprob, ...).")
@click.option("--echo-prime/--no-echo-prime", default=True, help="Print the prime before the generated text.  [default: echo]")
@click.option("--show-top", type=int, default=None, metavar="K", help="Instead of the text, show each step's top K candidates (as `charrnn inspect`).")
@click.option("--csv", "as_csv", is_flag=True, help="With --show-top: CSV instead of an aligned table.")
def sample(checkpoint: Path | None, device: str, prime: str | None, prime_file: Path | None, encoding: str,
           stop: tuple[str, ...], seed: int | None, temperature: float | None, length: int, unknown: str, num_samples: int,
           beam: int | None, length_penalty: float, fmt: str, echo_prime: bool, show_top: int | None,
           as_csv: bool, **decoding: Any) -> None:
    """Generate text from a trained model, one character at a time, streamed as it is made."""
    from .sample import beam_search, check_beam, check_kept, check_length, check_num_samples

    check_length(length)
    if length < 1:  # the library allows 0 (a warm-up only); asking the CLI for no text is a mistake
        raise CharRNNError(f"--length must be at least 1, got {length}")
    check_num_samples(num_samples)
    if show_top is not None:
        if beam is not None or num_samples != 1 or fmt != "text":
            raise CharRNNError("--show-top shows one sample; it takes no --beam, --num-samples or --format")
        _inspect(checkpoint, device, prime, prime_file, encoding, stop, seed, temperature, length, unknown, show_top,
                 as_csv, 40, decoding)
        return
    if as_csv:
        raise CharRNNError("--csv goes with --show-top")
    if beam is None and length_penalty != 1.0:
        raise CharRNNError("--length-penalty ranks beam search results; it goes with --beam")
    if beam is not None:  # checked before the model loads, like every option
        check_beam(beam, length)
        if not 1 <= num_samples <= beam:
            raise CharRNNError(f"--num-samples with --beam {beam} must be in 1..{beam} (the best N beams)")
    elif not (num_samples == 1 and fmt == "text"):  # only a single text sample streams in constant memory
        check_kept(num_samples, length, "samples")
    if beam is not None:
        changed = [name for name, value in (("--temperature", temperature), ("--top-k", decoding["top_k"]),
                                            ("--top-p", decoding["top_p"])) if value is not None]
        changed += [name for name, on in (("--greedy", decoding["greedy"]), ("--epsilon", decoding["epsilon"]),
                                          ("--repetition-penalty", decoding["repetition_penalty"] != 1.0)) if on]
        if changed:
            raise CharRNNError(f"--beam ranks by the model's own probabilities; drop {', '.join(changed)}")
    ckpt, prime_text, stops, seed, settings = _setup(checkpoint, device, prime, prime_file, encoding, stop, unknown,
                                                     seed, temperature, **decoding)
    if beam is not None:
        click.echo(f"beam search, width {beam}", err=True)
        results = beam_search(ckpt.model, ckpt.vocab, length, width=beam, num_return=num_samples, prime=prime_text,
                              stop=stops, unknown=unknown, length_penalty=length_penalty)
        _print_samples(results, prime_text if echo_prime else "", fmt)
        return
    click.echo(f"seed {seed}, {settings.strategy}", err=True)
    if num_samples == 1 and fmt == "text":
        _stream_one(ckpt, length, prime_text if echo_prime else "", prime_text, settings, seed, stops, unknown)
        return
    from .sample import generate_batch

    results = generate_batch(ckpt.model, ckpt.vocab, length, num_samples=num_samples, prime=prime_text,
                             decoding=settings, seed=seed, stop=stops, unknown=unknown)
    _print_samples(results, prime_text if echo_prime else "", fmt)


def _stream_one(ckpt: Any, length: int, echo: str, prime: str, settings: Any, seed: int, stops: list[str],
                unknown: str) -> None:
    """Write each character as it is made; nothing is kept, so any length runs in constant memory."""
    from .sample import stream

    out = sys.stdout
    flush_each = out.isatty()
    out.write(echo)
    out.flush()
    for char in stream(ckpt.model, ckpt.vocab, length, prime=prime, decoding=settings, seed=seed, stop=stops,
                       unknown=unknown):
        out.write(char)
        if flush_each or char == "\n":
            out.flush()
    out.write("\n")
    out.flush()


def _print_samples(results: list[Any], echo: str, fmt: str) -> None:
    import json

    from .sample import sample_record

    for i, result in enumerate(results):
        if fmt == "jsonl":
            click.echo(json.dumps(sample_record(result), ensure_ascii=False))
            continue
        if len(results) > 1:
            seed = "" if result.seed is None else f" · seed {result.seed}"
            click.echo(f"--- sample {i + 1}/{len(results)}{seed} · {result.strategy} · "
                       f"logprob {result.logprob:.2f} ({result.logprob_per_char:.3f}/char) ---")
        click.echo(echo + result.text)


@main.command()
@_decoding_options
@click.option("-k", "--top", type=int, default=5, show_default=True, help="Candidates shown per position.")
@click.option("--context-width", type=int, default=40, show_default=True, help="Characters of context shown (its end).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (raw characters, full precision) instead of an aligned table.")
def inspect(checkpoint: Path | None, device: str, prime: str | None, prime_file: Path | None, encoding: str,
            stop: tuple[str, ...], seed: int | None, temperature: float | None, length: int, unknown: str, top: int,
            context_width: int, as_csv: bool, **decoding: Any) -> None:
    """Generate as `sample` does and show, for each position, the context and the top candidates.

    The probabilities are those of the distribution the character was drawn from (after
    temperature, top-k/top-p and the repetition penalty; with --greedy, the model's own at T=1).
    The same seed gives the same text as `charrnn sample`.
    """
    _inspect(checkpoint, device, prime, prime_file, encoding, stop, seed, temperature, length, unknown, top, as_csv,
             context_width, decoding)


def _inspect(checkpoint: Path | None, device: str, prime: str | None, prime_file: Path | None, encoding: str,
             stop: tuple[str, ...], seed: int | None, temperature: float | None, length: int, unknown: str, top: int,
             as_csv: bool, context_width: int, decoding: dict[str, Any]) -> None:
    import csv

    from .sample import check_length, inspect_steps, step_csv_header, step_csv_row, step_table_header, step_table_row

    check_length(length)
    if length < 1:  # the library allows 0 (a warm-up only); asking the CLI for no text is a mistake
        raise CharRNNError(f"--length must be at least 1, got {length}")
    if not 1 <= top <= 1000:
        raise CharRNNError(f"number of candidates shown must be in 1..1000, got {top}")
    if not 0 <= context_width <= 10_000:
        raise CharRNNError(f"context width must be in 0..10000, got {context_width}")
    ckpt, prime_text, stops, seed, settings = _setup(checkpoint, device, prime, prime_file, encoding, stop, unknown,
                                                     seed, temperature, **decoding)
    click.echo(f"seed {seed}, {settings.strategy}", err=True)
    top = min(top, len(ckpt.vocab))
    steps = inspect_steps(ckpt.model, ckpt.vocab, length, top=top, prime=prime_text, decoding=settings, seed=seed,
                          stop=stops, unknown=unknown, context_chars=context_width)
    out = sys.stdout
    if as_csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(step_csv_header(top))
        for view in steps:
            writer.writerow(step_csv_row(view))
        out.flush()
        return
    click.echo(step_table_header(top, context_width))
    for view in steps:
        click.echo(step_table_row(view, context_width))


# ----------------------------------------------------------------------------------------------
# score


@main.command()
@click.argument("text_file", type=click.Path(path_type=Path))
@click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]")
@click.option("--context", default="", help="Text the model reads first (not scored); without it the file's first character is only context.")
@click.option("--per-char", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None, help="Write each character's surprisal (TSV: position, char, nats, bits) to this file ('-': stdout).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with characters the model never saw.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def score(text_file: Path, checkpoint: Path | None, context: str, per_char: Path | None, unknown: str, encoding: str,
          device: str) -> None:
    """How well a model predicts TEXT_FILE: mean loss in nats/char, bits/char and perplexity."""
    from .checkpoint import atomic_write, load
    from .data import read_text
    from .runtime import resolve_device
    from .scoring import score_text, surprisal_lines

    if per_char is not None and str(per_char) != "-" and not per_char.parent.is_dir():  # say so before scoring
        raise CharRNNError(f"--per-char {per_char}: folder {per_char.parent} does not exist")
    text = read_text(text_file, encoding=encoding)
    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    result = score_text(ckpt.model, ckpt.vocab, text, context=context, unknown=unknown, per_char=per_char is not None)
    to_stdout = per_char is not None and (str(per_char) == "-" or _is_stdout(per_char))
    if per_char is not None:
        if to_stdout:
            for line in surprisal_lines(result):
                sys.stdout.write(line)
            sys.stdout.flush()
        else:
            atomic_write(per_char, lambda f: f.writelines(surprisal_lines(result)), mode="w")
    click.echo(f"{text_file}: {result.num_chars:,} characters scored under {ckpt.path}\n"
               f"  {result.nats_per_char:.4f} nats/char   {result.bits_per_char:.4f} bits/char   "
               f"perplexity {result.perplexity:.3f}", err=to_stdout)


def _is_stdout(path: Path) -> bool:
    """Whether `path` is where stdout already goes (/dev/stdout, or the file it is redirected to):
    then the report is written through stdout, in order, and the summary goes to stderr."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


# ----------------------------------------------------------------------------------------------
# serve


@main.command()
@click.argument("runs_dir", type=click.Path(file_okay=False, path_type=Path), default=CHECKPOINT_ROOT,
                metavar="[RUNS_DIR]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless --allow-remote).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port to listen on.  [default: a free one, printed]")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other machines can reach (anyone who can reach it can use the models).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def serve(runs_dir: Path, host: str, port: int, allow_remote: bool, device: str) -> None:
    """A local web playground over the runs in RUNS_DIR (default: checkpoints/).

    Pick a run, type a prime, move the temperature and watch the text stream in with each
    character's top candidates; compare settings side by side; colour text by a neuron. The page
    calls a JSON API that scripts can use too (see the README's Playground section).
    """
    try:
        from .serve.server import run_server
    except ImportError as exc:  # starlette/uvicorn are an optional extra
        raise CharRNNError(f"charrnn serve needs the serve extra ({exc.name} is missing): "
                           "pip install 'charrnn[serve]'") from None
    stopped_by = run_server(runs_dir, host=host, port=port, allow_remote=allow_remote, device=device,
                            echo=lambda line: click.echo(line, err=line.startswith("warning")))
    click.echo(f"playground stopped{f' ({stopped_by})' if stopped_by else ''}", err=True)


# ----------------------------------------------------------------------------------------------
# data


@main.group()
def data() -> None:
    """Get named corpora (tiny Shakespeare, Paul Graham essays)."""


@data.command("get")
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True, help="Where to put it.")
@click.option("--mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="Copy from this local folder instead of downloading.  [default: $CHARRNN_DATA_MIRROR]")
@click.option("--url", default=None, help="Download from this address instead of the public one.")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is present.")
def data_get(name: str, data_dir: Path, mirror: Path | None, url: str | None, force: bool) -> None:
    """Fetch corpus NAME into --data-dir, verifying its sha256."""
    from .corpora import get

    path = get(name, data_dir, mirror=mirror, url=url, force=force)
    click.echo(f"{name}: {path} ({path.stat().st_size:,} bytes, sha256 verified)")


@data.command("list")
def data_list() -> None:
    """List the corpora `charrnn data get` knows."""
    from .corpora import CORPORA

    for corpus in CORPORA.values():
        click.echo(f"{corpus.name:<12} {corpus.description}")


# ----------------------------------------------------------------------------------------------
# sweep


@main.command()
@click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for samples, metrics, plots and report.  [default: sweeps/<run name>]")
@click.option("--temperatures", default=",".join(f"{t:g}" for t in _SWEEP_DEFAULTS.temperatures), show_default=True, help="Comma-separated softmax temperatures.")
@click.option("--greedy/--no-greedy", default=True, show_default=True, help="Also decode greedily (argmax; one sample).")
@click.option("--num-samples", type=click.IntRange(1, 10_000), default=_SWEEP_DEFAULTS.num_samples, show_default=True, help="Samples per temperature (sample i uses seed + i).")
@click.option("--length", type=click.IntRange(1, 1_000_000), default=_SWEEP_DEFAULTS.length, show_default=True, help="Characters per sample.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=_SWEEP_DEFAULTS.seed, show_default=True, help="First seed; the same at every temperature.")
@click.option("--prime", default=_SWEEP_DEFAULTS.prime, help="Text to warm the hidden state with, the same at every temperature.  [default: none]")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="Training text to compare samples with.  [default: the path in the checkpoint]")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the training text.")
@click.option("--check", is_flag=True, help="Exit with status 1 unless the spectrum holds (repetition falls, invention rises, greedy loops, T=2 invents a third of its words).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def sweep(checkpoint: Path | None, out: Path | None, temperatures: str, greedy: bool, num_samples: int, length: int,
          seed: int, prime: str, corpus: Path | None, encoding: str, check: bool, device: str) -> None:
    """Sample a model across temperatures and measure the repetitive-to-chaotic spectrum."""
    from . import sweep as sweeping

    run_dir = _checkpoint_dir(checkpoint)
    out = out or Path("sweeps") / (run_dir.stem if run_dir.is_file() else run_dir.name)
    config = sweeping.SweepConfig(temperatures=sweeping.parse_temperatures(temperatures), greedy=greedy,
                                  num_samples=num_samples, length=length, seed=seed, prime=prime)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails now, not after the sampling

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "index":
            click.echo(f"indexing the training text ({event['chars']:,} chars)", err=True)
        elif event["event"] == "setting":
            click.echo(f"[{event['number']}/{event['total']}] {event['setting']}: {event['seconds']:.1f}s", err=True)
        elif event["event"] == "warning":
            click.echo(f"warning: {event['message']}", err=True)

    try:
        result = sweeping.sweep(run_dir, out, config, corpus=corpus, encoding=encoding, device=device,
                                on_progress=progress)
    except BaseException:
        if made and not any(out.iterdir()):  # a refused checkpoint or corpus leaves no empty folder behind
            out.rmdir()
        raise
    click.echo(sweeping.format_summary(result))
    click.echo(f"wrote {out}/: report.html, report.md, metrics.csv/json, summary.csv, sweep.png/svg, "
               f"spectrum.png/svg, samples/ in {result.timings['total_s']:.1f}s", err=True)
    if check and not result.passed:
        raise click.ClickException("the spectrum does not hold: " + "; ".join(c.name for c in result.checks if not c.passed))


if __name__ == "__main__":
    main()
