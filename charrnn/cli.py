"""Command-line interface: parse options, call the library, print. No work happens here.

torch is imported inside the commands, so `charrnn --help` answers instantly.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .config import (
    MAX_GRAD_CLIP,
    MAX_LR,
    MAX_STEPS,
    MAX_WEIGHT_DECAY,
    PRESETS,
    ModelConfig,
    TrainConfig,
    parse_duration,
)
from .errors import CharRNNError
from .progress import TrainProgress, fmt_time
from .sweep import SweepConfig

CHECKPOINT_ROOT = "checkpoints"
_SWEEP_DEFAULTS = SweepConfig()  # the dataclass is the single source of the sweep's defaults
# `train` stopped by a signal saves everything, then exits with the shell's code for that signal
# (128 + signal number), so scripts can tell "finished" (0) from "stopped early, resumable".
STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class _FullHelpGroup(click.Group):
    """Lists each command with its whole first sentence, wrapped: click's default cuts it at the
    terminal's width with "...", which left most descriptions unfinished."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _Group(_FullHelpGroup):
    """Turns library errors into one line and a non-zero exit instead of a traceback."""

    group_class = _FullHelpGroup  # `charrnn data` and other command groups list their commands in full too

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _write_utf8()
        return super().main(*args, **kwargs)

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


def _write_utf8() -> None:
    """Every command writes UTF-8, whatever the terminal's or locale's encoding claims.

    Models write any character of their corpus, and a stream that could not encode one would fail
    half-way through a sample (PYTHONIOENCODING=ascii, a latin-1 locale, Windows' cp1252 pipes).
    UTF-8 is what the corpus, the checkpoints and every file charrnn writes hold, and what Python's
    own UTF-8 mode (PEP 540, on by default in the C locale) uses, with the same error handlers: the
    bytes of an undecodable file name are written back as they came; stderr escapes what it cannot.
    """
    for name, errors in (("stdout", "surrogateescape"), ("stderr", "backslashreplace")):
        stream = getattr(sys, name)
        try:
            is_utf8 = codecs.lookup(stream.encoding).name == "utf-8"
        except (AttributeError, LookupError, TypeError):  # no stream (pythonw), or not a text file
            continue
        if not is_utf8 and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors=errors)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except CharRNNError as exc:
        raise click.BadParameter(str(exc)) from None


def _prepare_threads(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Runs while the options are parsed, before the command imports torch: OpenMP reads its
    waiting policy once, when torch loads (see charrnn.threads)."""
    from .threads import prepare_process

    prepare_process(value)


# Every command that computes takes it; the count itself is set when the work starts.
_threads_option = click.option(
    "--threads", default=None, metavar="N|auto", expose_value=False, callback=_prepare_threads,
    help="CPU threads for torch and NumPy (a fixed N also repeats runs bit for bit).  "
         "[default: $CHARRNN_THREADS, else auto: the cores other programs leave free, re-checked while training]")


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


def _preset_default(section: str, key: str) -> str:
    """What `--help` shows as an option's default: the presets decide most model and optimiser
    options, so name the value of each (`quick` is what a CPU run gets by default)."""
    fallback = (ModelConfig if section == "model" else TrainConfig).__dataclass_fields__[key].default

    def show(value: Any) -> str:
        if value is None:
            return "off"
        if key == "time_budget":
            return fmt_time(value)
        return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)

    values = {name: show(preset[section].get(key, fallback)) for name, preset in PRESETS.items()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "by --preset: " + ", ".join(f"{name} {value}" for name, value in values.items())


def _preset_help(text: str, section: str, key: str) -> str:
    return f"{text}  [default: {_preset_default(section, key)}]"


def _runs_dir_for(text_file: str) -> Path:
    stem = Path(text_file.rstrip("/\\")).stem or "run"
    base = Path(CHECKPOINT_ROOT) / stem
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{stem}-{n}")
    return candidate


@main.command()
@click.argument("text_files", nargs=-1, metavar="TEXT...")
@click.option("--preset", type=click.Choice(["auto", *PRESETS]), default="auto", show_default=True,
              help="Named configuration (see README); every flag below overrides it. "
                   "auto: gpu on CUDA, else by --time-budget (quick <= 5m, cpu10 <= 20m, cpu30), so a CPU run "
                   "with the default budget gets quick.")
@click.option("--model", type=click.Choice(["lstm", "gru", "rnn"]), default=None, help=_preset_help("Recurrent core.", "model", "model"))
@click.option("--embed-dim", type=click.IntRange(1, 65536), default=None, help=_preset_help("Character embedding size.", "model", "embed_dim"))
@click.option("--hidden-size", type=click.IntRange(1, 65536), default=None, help=_preset_help("Units per recurrent layer.", "model", "hidden_size"))
@click.option("--num-layers", type=click.IntRange(1, 64), default=None, help=_preset_help("Recurrent layers.", "model", "num_layers"))
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help=_preset_help("Dropout between layers and before the head.", "model", "dropout"))
@click.option("--weight-drop", type=click.FloatRange(0, 1, max_open=True), default=None, help=_preset_help("DropConnect on the recurrent weights while training (AWD-LSTM).", "model", "weight_drop"))
@click.option("--tie-weights/--no-tie-weights", default=None, help=_preset_help("Share embedding and head weights (needs --embed-dim = --hidden-size).", "model", "tie_weights"))
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None, help=_preset_help("Contiguous streams per step.", "train", "batch_size"))
@click.option("--seq-len", type=click.IntRange(1, 1 << 20), default=None, help=_preset_help("Characters per BPTT window.", "train", "seq_len"))
@click.option("--lr", type=click.FloatRange(0, MAX_LR, min_open=True), default=None, help=_preset_help(f"Peak learning rate (AdamW), at most {MAX_LR:g}.", "train", "lr"))
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None, help=_preset_help("Decay after warm-up.", "train", "lr_schedule"))
@click.option("--min-lr-frac", type=click.FloatRange(0, 1), default=None, help=_preset_help("Where the cosine ends, as a fraction of --lr.", "train", "min_lr_frac"))
@click.option("--warmup-steps", type=click.IntRange(0, MAX_STEPS), default=None, help=_preset_help("Linear learning-rate warm-up steps.", "train", "warmup_steps"))
@click.option("--decay-steps", type=click.IntRange(1, MAX_STEPS), default=None, help="Steps over which the cosine decays (fixes the schedule across resumes).  [default: the whole run]")
@click.option("--weight-decay", type=click.FloatRange(0, MAX_WEIGHT_DECAY), default=None, help=_preset_help("AdamW's decoupled weight decay.", "train", "weight_decay"))
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None, help=_preset_help("Evaluate, keep and sample a moving average of the weights with this decay, e.g. 0.999 (0: off).", "train", "ema"))
@click.option("--grad-clip", type=click.FloatRange(0, MAX_GRAD_CLIP, min_open=True), default=None, help=_preset_help("Clip the gradient's global norm to this.", "train", "grad_clip"))
@click.option("--max-steps", type=click.IntRange(1, MAX_STEPS), default=None, help="Stop after this many steps (on --resume: continue to this step).  [default: none, the time budget ends the run]")
@click.option("--time-budget", callback=_duration, default=None, help=_preset_help("Stop after this much wall clock, evaluation included (90s, 10m, 1h; on --resume: this much more).", "train", "time_budget"))
@click.option("--eval-interval", type=click.IntRange(1, MAX_STEPS), default=None, help=_preset_help("Steps between full validation passes.", "train", "eval_interval"))
@click.option("--log-interval", type=click.IntRange(1, MAX_STEPS), default=None, help=_preset_help("Steps between progress updates.", "train", "log_interval"))
@click.option("--val-frac", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help=_preset_help("Share of the text (its end) held out for validation.", "train", "val_frac"))
@click.option("--patience", type=click.IntRange(1, MAX_STEPS), default=None, help=_preset_help("Stop after this many evaluations without improvement.", "train", "patience"))
@click.option("--stateful/--no-stateful", default=None, help="Carry the hidden state across windows (truncated BPTT).  [default: stateful]")
@click.option("--state-reset-prob", type=click.FloatRange(0, 1), default=None, help="Chance per stream and window of restarting from the zero state, so samples start well from short primes.  [default: 0.1]")
@click.option("--sample-interval", type=click.IntRange(0, MAX_STEPS), default=None, help="Steps between samples in the log (0: a sample at each evaluation).")
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
# Configuration files, TensorBoard, a separate validation text (charrnn.config_file, charrnn.tensorboard_log)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Read the options from this TOML file (keys named like the options: hidden_size = 512, corpus = \"data/x.txt\"); options given here override it. A run folder's config.toml repeats that run.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration (preset + file + options) as TOML and exit.")
@click.option("--val-file", multiple=True, metavar="FILE", help="Validate on this text instead of a split of TEXT, which is then trained on whole (repeatable; files, a directory or a glob, joined like TEXT).")
@click.option("--val-unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="Characters of --val-file the training text lacks: refuse, or drop them (as score --unknown).")
@click.option("--tensorboard", is_flag=False, flag_value="", default=None, metavar="[DIR]", help="Write TensorBoard logs (losses, lr, grad norm, speed, samples) into the run folder, or into DIR/<run name>; tensorboard --logdir checkpoints shows the runs.")
@_threads_option
def train(text_files: tuple[str, ...], preset: str, out: Path | None, resume_run: Path | None, init_from: Path | None,
          encoding: str, separator: str, val_split: str, cache_dir: Path | None, ddp: bool, quiet: bool,
          config_path: Path | None, print_config: bool, val_file: tuple[str, ...], val_unknown: str,
          tensorboard: str | None, **flags: Any) -> None:
    """Train a model on TEXT and keep its best checkpoint.

    TEXT is a UTF-8 text file, several files, a directory (every text file in it, recursively) or a
    glob; files are joined with --separator and encoded once into a memory-mapped cache. TEXT '-'
    reads standard input (at most 256 MiB; a resume needs the same text piped again). Launched by
    torchrun (torchrun --nproc_per_node N -m charrnn train ...) it trains on N processes with DDP.
    """
    training = importlib.import_module("charrnn.train")  # `charrnn.train` is the function (see __init__)
    from .corpus_cache import CorpusFiles, parse_separator, run_name
    from .distributed import is_main_process, launched_by_torchrun

    ctx = click.get_current_context()
    if resume_run is not None and (config_path is not None or print_config or val_file):
        raise CharRNNError(f"--resume continues the run in {resume_run} with its own settings (and validation); "
                           "it takes no --config, --print-config or --val-file")
    options = _with_config_file(ctx, config_path, dict(ctx.params))
    text_files, preset, out, init_from = options["text_files"], options["preset"], options["out"], options["init_from"]
    encoding, separator, val_split, cache_dir = (options[k] for k in ("encoding", "separator", "val_split", "cache_dir"))
    flags = {k: options[k] for k in flags}
    val_file, val_unknown = options["val_file"], options["val_unknown"]
    if val_file and flags.get("val_frac") is not None:
        raise CharRNNError("--val-frac splits TEXT for validation; with --val-file TEXT is trained on whole, so drop one")
    if print_config:
        click.echo(_print_config(options, flags), nl=False)
        return
    if not text_files:
        if options["tensorboard"] and Path(options["tensorboard"]).is_file():  # `--tensorboard TEXT` took TEXT as DIR
            raise CharRNNError(f"--tensorboard took {options['tensorboard']} as its folder; put TEXT before "
                               "--tensorboard, or write --tensorboard=DIR")
        raise CharRNNError("give TEXT (a file, several, a directory or a glob), or a --config file naming a corpus")
    from .validation import ValidationFiles

    validation = ValidationFiles.from_paths(val_file, encoding=encoding, separator=parse_separator(separator),
                                            unknown=val_unknown) if val_file else None
    if ddp and not launched_by_torchrun():
        raise CharRNNError("--ddp needs several processes: launch with torchrun --nproc_per_node N -m charrnn train ...")
    main_process = is_main_process()  # under torchrun only rank 0 prints
    progress = TrainProgress(quiet or not main_process)
    if options["tensorboard"] is not None and main_process:  # one more listener on the trainer's events
        from .tensorboard_log import TensorBoardLog, tee

        progress = tee(progress, TensorBoardLog(Path(options["tensorboard"]) if options["tensorboard"] else None))
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
    stdin = "-" in text_files
    if stdin:  # `charrnn train -`: the text of a pipe, held in memory like train(text) in the library
        text, corpus = _stdin_corpus(text_files, encoding)
    else:
        text = CorpusFiles.from_paths(text_files, encoding=encoding, separator=parse_separator(separator),
                                      val_split=val_split, cache_dir=cache_dir, log=progress if main_process else None)
        corpus = {"path": str(Path(text_files[0]).resolve()), "name": Path(text_files[0]).name}
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
        run_dir = out or _runs_dir_for("stdin" if stdin else run_name(text_files))
        _refuse_overwrite(run_dir, explicit=out is not None)
        with _process_group():
            if init_from is not None:
                result = training.fine_tune(text, run_dir, init_from, train_config,
                                            dropout=model_flags.get("dropout"), weight_drop=model_flags.get("weight_drop"),
                                            corpus=corpus, log=progress, settings=_settings(options), validation=validation)
            else:
                result = training.train(text, run_dir, model_config, train_config, corpus=corpus, log=progress,
                                        settings=_settings(options), validation=validation)
    if main_process:
        _summary(result, _resume_command(text_files, result.run_dir, encoding, separator, val_split, cache_dir),
                 stdin=stdin)


def _stdin_corpus(text_files: tuple[str, ...], encoding: str) -> tuple[str, dict[str, Any]]:
    """The training text from standard input, recorded as <stdin> (its sha256 is added by the trainer)."""
    from .data import STDIN_NAME, read_text
    from .distributed import launched_by_torchrun

    if len(text_files) > 1:
        raise CharRNNError("- (standard input) is the whole corpus; it cannot be joined with other files")
    if launched_by_torchrun():
        raise CharRNNError("under torchrun only one process reads standard input; save the text to a file")
    _stdin_note("the training text")
    return read_text("-", encoding=encoding), {"path": STDIN_NAME, "name": STDIN_NAME}


def _stdin_note(what: str) -> None:
    """Reading a terminal waits for typing: say so, so a forgotten pipe does not look like a hang."""
    if sys.stdin is not None and sys.stdin.isatty():
        click.echo(f"reading {what} from standard input; end it with Ctrl-D", err=True)


# Config-file keys that are not named like the train command's parameters.
_CONFIG_PARAMS = {"corpus": "text_files"}


def _with_config_file(ctx: click.Context, config_path: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """The train command's options with a config file's values under those given on the command line."""
    from click.core import ParameterSource

    from .config_file import escape_separator, read

    if config_path is None:
        return options
    given = {name for name in options
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    params = {p.name: p for p in ctx.command.params}
    merged = dict(options)
    for key, value in read(config_path).items():
        name = _CONFIG_PARAMS.get(key, key)
        if name in given or name not in params:
            continue
        if key == "separator":  # the file holds the text itself; the option its escaped spelling
            value = escape_separator(value)
        elif key == "tensorboard":  # true: into the run folder (the option given bare); false: off
            value = "" if value is True else None if value is False else value
        elif isinstance(params[name].type, click.Path) and params[name].type.path_type is Path:
            value = Path(value)
        merged[name] = tuple(value) if isinstance(value, list) else value
    if merged["resume_run"] is None:  # a value out of range is named with the file it may come from
        try:
            _resolved_config(merged, {k: merged[k] for k in _FLAG_KEYS})
        except CharRNNError as exc:
            raise CharRNNError(f"{exc} (with config file {config_path})") from None
    return merged


def _concrete_preset(preset: str, train_flags: dict[str, Any]) -> str:
    if preset != "auto":
        return preset
    from .config import preset_for
    from .runtime import resolve_device

    return preset_for(resolve_device(train_flags.get("device", "auto")).type, train_flags.get("time_budget"))


def _resolved_config(options: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Preset + file + options as one plain configuration (charrnn.config_file.resolved)."""
    from .config_file import resolved
    from .corpus_cache import parse_separator

    flags = {k: v for k, v in flags.items() if v is not None}
    model_keys = {f for f in ModelConfig.__dataclass_fields__} - {"vocab_size"}
    model_flags = {k: v for k, v in flags.items() if k in model_keys}
    train_flags = {k: v for k, v in flags.items() if k not in model_keys}
    preset = _concrete_preset(options["preset"], train_flags)
    model_config, train_config = _configs(preset, model_flags, train_flags)
    data: dict[str, Any] = {"corpus": [str(Path(p).resolve()) for p in options["text_files"]], "preset": preset,
                            "encoding": options["encoding"], "separator": parse_separator(options["separator"]),
                            "val_split": options["val_split"]}
    for key in ("cache_dir", "out", "init_from"):
        if options.get(key) is not None:
            data[key] = str(Path(options[key]).resolve())
    if options.get("tensorboard") is not None:
        data["tensorboard"] = str(Path(options["tensorboard"]).resolve()) if options["tensorboard"] else True
    if options.get("val_file"):
        data["val_file"] = [str(Path(p).resolve()) for p in options["val_file"]]
        data["val_unknown"] = options["val_unknown"]
    if not data["corpus"]:
        del data["corpus"]
    return resolved(model_config, train_config, data)


def _print_config(options: dict[str, Any], flags: dict[str, Any]) -> str:
    from .config_file import dumps

    return dumps(_resolved_config(options, flags))


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    """What the run folder's config.toml records (every option as resolved)."""
    return _resolved_config(options, {k: options.get(k) for k in options if k in _FLAG_KEYS})


_FLAG_KEYS = {f for f in ModelConfig.__dataclass_fields__ if f != "vocab_size"} | set(TrainConfig.__dataclass_fields__)


def _resume_command(text_files: tuple[str, ...], run_dir: Path, encoding: str, separator: str, val_split: str,
                    cache_dir: Path | None) -> str:
    """The command that continues this run: its own corpus files (absolute, so it works from any
    folder) and the options that decide how they are read."""
    import shlex

    ctx = click.get_current_context()
    args = ["charrnn", "train", *(str(Path(p).resolve()) for p in text_files), "--resume", str(run_dir)]
    for name, value in (("encoding", encoding), ("separator", separator), ("val_split", val_split),
                        ("cache_dir", cache_dir)):
        if ctx.get_parameter_source(name).name != "DEFAULT":
            args += ["--" + name.replace("_", "-"), str(value)]
    return shlex.join(args)


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


def _summary(result: Any, resume_command: str, stdin: bool = False) -> None:
    from .advice import undertrained_note

    if result.best_val_loss is None:
        click.echo(f"stopped ({result.stop_reason}) after {result.step} steps without an evaluation", err=True)
        return
    click.echo(f"done ({result.stop_reason}): best val loss {result.best_val_loss:.4f} nats/char "
               f"({result.best_val_bits:.3f} bits/char) at step {result.best_step}, "
               f"{result.step} steps in {fmt_time(result.elapsed)}; saved in {result.run_dir}/", err=True)
    note = undertrained_note(result)
    if note:
        click.echo(f"undertrained: {note}", err=True)
    click.echo(f"sample it: charrnn sample -c {result.run_dir} -t 0.5", err=True)
    if result.stop_reason in STOP_EXIT_CODES:
        if stdin:  # nothing on disk to read again: the same text must come through the pipe again
            click.echo(f"stopped by {result.stop_reason}; the text came from standard input, so continue by "
                       f"giving it again: ... | charrnn train - --resume {result.run_dir}", err=True)
        else:
            click.echo(f"stopped by {result.stop_reason}; continue with: {resume_command}", err=True)
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


def _checkpoint_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """An empty -c would become '.' and load whatever the current folder holds: refuse it."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a run folder or a .pt file (or leave -c out for the most recent run)")
    return None if value is None else Path(value)


def _decoding_options(func: Any) -> Any:
    """The options shared by `sample` and `inspect`. A new decoding option (a field of
    `charrnn.decoding.Decoding`) gets its click option here, under the field's name."""
    options = [
        click.option("-c", "--checkpoint", type=click.Path(), callback=_checkpoint_path, default=None, help="Run folder or .pt file.  [default: the most recent run]"),
        click.option("-n", "--length", type=int, default=1000, show_default=True, help="Characters to generate (at most)."),
        click.option("-t", "--temperature", type=float, default=None, help="Softmax temperature; 0 means greedy.  [default: 0.8]"),
        click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax)."),
        click.option("--top-k", type=int, default=None, help="Sample only among the K most likely characters."),
        click.option("--top-p", type=float, default=None, help="Nucleus: sample among the fewest characters holding this much probability (0 < P <= 1)."),
        click.option("--epsilon", type=float, default=0.0, help="With this probability take the most likely character, else sample: 1 is greedy, 0 plain sampling. The course notes' ε (the chance of the argmax), the reverse of reinforcement learning's ε-greedy (the chance to explore)."),
        click.option("--repetition-penalty", type=float, default=1.0, help="Divide the probability of characters generated in the last --repetition-window by this (>= 1; breaks loops)."),
        click.option("--repetition-window", type=int, default=20, show_default=True, help="How many recent characters the penalty looks back."),
        click.option("--stop", multiple=True, help=r"End right after this string (repeatable; escapes like '\n\n' work)."),
        click.option("--prime", default=None, help="Text to warm the hidden state with."),
        click.option("--prime-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None, help="Read the prime from this file (several lines are fine; '-': standard input)."),
        click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of --prime-file."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Same seed, same text.  [default: random, printed]"),
        click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with prime characters the model never saw."),
        click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps."),
    ]
    for option in reversed(options):  # decorators apply bottom-up
        func = option(func)
    return func


def _load_for(request: Any, checkpoint: Path | None, device: str) -> Any:
    """The checkpoint the request runs on, with the request's prime and stop strings checked
    against its vocabulary: the output starts only once nothing in the input can fail any more."""
    from .checkpoint import load
    from .runtime import resolve_device

    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    request.check_vocab(ckpt.vocab)
    return ckpt


@main.command()
@_decoding_options
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples, generated together in one batched pass (seeds SEED, SEED+1, ...).")
@click.option("--beam", type=int, default=None, help="Beam search of this width: the most likely continuation(s) instead of a sample.")
@click.option("--length-penalty", type=float, default=1.0, show_default=True, help="Beam ranking: log-probability / length**this (1 = per-character mean).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True, help="jsonl: one JSON object per sample (text, seed, temperature, strategy, logprob, ...).")
@click.option("--echo-prime/--no-echo-prime", default=None, help="Print the prime before the generated text.  [default: echo]")
@click.option("--show-top", type=int, default=None, metavar="K", help="Instead of the text, show each step's top K candidates (as `charrnn inspect`).")
@click.option("--csv", "as_csv", is_flag=True, help="With --show-top: CSV instead of an aligned table.")
@_threads_option
def sample(checkpoint: Path | None, device: str, num_samples: int, beam: int | None, length_penalty: float, fmt: str,
           echo_prime: bool | None, show_top: int | None, as_csv: bool, **options: Any) -> None:
    """Generate text from a trained model, one character at a time, streamed as it is made."""
    from .request import GenerationRequest
    from .sample import beam_search, generate_batch

    request = GenerationRequest.build(num_samples=num_samples, beam=beam, length_penalty=length_penalty, format=fmt,
                                      echo_prime=echo_prime, show_top=show_top, csv=as_csv, **options)
    ckpt = _load_for(request, checkpoint, device)
    if request.show_top is not None:
        _print_steps(ckpt, request)
        return
    echo = request.prime if request.echo_prime else ""
    if request.beam is not None:
        click.echo(f"beam search, width {request.beam}", err=True)
        results = beam_search(ckpt.model, ckpt.vocab, request.length, width=request.beam,
                              num_return=request.num_samples, prime=request.prime, stop=request.stops,
                              unknown=request.unknown, length_penalty=request.length_penalty)
        _print_samples(results, echo, request.format)
        return
    click.echo(f"seed {request.seed}, {request.decoding.strategy}", err=True)
    if request.streams:
        _stream_one(ckpt, request, echo)
        return
    results = generate_batch(ckpt.model, ckpt.vocab, request.length, num_samples=request.num_samples,
                             prime=request.prime, decoding=request.decoding, seed=request.seed, stop=request.stops,
                             unknown=request.unknown)
    _print_samples(results, echo, request.format)


def _stream_one(ckpt: Any, request: Any, echo: str) -> None:
    """Write each character as it is made; nothing is kept, so any length runs in constant memory."""
    from .sample import stream

    out = sys.stdout
    flush_each = out.isatty()
    out.write(echo)
    out.flush()
    for char in stream(ckpt.model, ckpt.vocab, request.length, prime=request.prime, decoding=request.decoding,
                       seed=request.seed, stop=request.stops, unknown=request.unknown):
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
@_threads_option
def inspect(checkpoint: Path | None, device: str, top: int, context_width: int, as_csv: bool, **options: Any) -> None:
    """Generate as `sample` does and show, for each position, the context and the top candidates.

    The probabilities are those of the distribution the character was drawn from (after
    temperature, top-k/top-p and the repetition penalty; with --greedy, the model's own at T=1).
    The same seed gives the same text as `charrnn sample`.
    """
    from .request import GenerationRequest

    request = GenerationRequest.build(show_top=top, csv=as_csv, context_width=context_width, **options)
    _print_steps(_load_for(request, checkpoint, device), request)


def _print_steps(ckpt: Any, request: Any) -> None:
    import csv

    from .sample import inspect_steps, step_csv_header, step_csv_row, step_table_header, step_table_row

    click.echo(f"seed {request.seed}, {request.decoding.strategy}", err=True)
    top = min(request.show_top, len(ckpt.vocab))
    steps = inspect_steps(ckpt.model, ckpt.vocab, request.length, top=top, prime=request.prime,
                          decoding=request.decoding, seed=request.seed, stop=request.stops, unknown=request.unknown,
                          context_chars=request.context_width)
    out = sys.stdout
    if request.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(step_csv_header(top))
        for view in steps:
            writer.writerow(step_csv_row(view))
        out.flush()
        return
    click.echo(step_table_header(top, request.context_width))
    for view in steps:
        click.echo(step_table_row(view, request.context_width))


# ----------------------------------------------------------------------------------------------
# score


@main.command()
@click.argument("text_file", type=click.Path(allow_dash=True, path_type=Path))
@click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]")
@click.option("--context", default="", help="Text the model reads first (not scored); without it the file's first character is only context.")
@click.option("--per-char", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None, help="Write each character's surprisal (TSV: position, char, nats, bits) to this file ('-': stdout).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with characters the model never saw.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--ngram", "ngram_order", type=int, default=None, metavar="N", help="Also report an order-N character n-gram model (interpolated Kneser-Ney) fitted on the run's training text.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="With --ngram: the training text to fit it on (all of it).  [default: the run's recorded corpus minus its validation split]")
@_threads_option
def score(text_file: Path, checkpoint: Path | None, context: str, per_char: Path | None, unknown: str, encoding: str,
          device: str, ngram_order: int | None, corpus: Path | None) -> None:
    """How well a model predicts TEXT_FILE: mean loss in nats/char, bits/char and perplexity.

    TEXT_FILE '-' reads standard input.
    """
    from .atomic import atomic_write
    from .checkpoint import load
    from .data import STDIN_NAME, is_stdin, read_text
    from .runtime import resolve_device
    from .scoring import score_text, surprisal_lines

    if per_char is not None and str(per_char) != "-" and not per_char.parent.is_dir():  # say so before scoring
        raise CharRNNError(f"--per-char {per_char}: folder {per_char.parent} does not exist")
    if corpus is not None and ngram_order is None:
        raise CharRNNError("--corpus names the n-gram's training text; it goes with --ngram N")
    if is_stdin(text_file):
        _stdin_note("the text to score")
    text = read_text(text_file, encoding=encoding)
    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    result = score_text(ckpt.model, ckpt.vocab, text, context=context, unknown=unknown, per_char=per_char is not None)
    ngram_line = ""
    if ngram_order is not None:
        from .runtext import recorded_split
        from .scoring import ngram_score

        train_text = read_text(corpus, encoding=encoding) if corpus is not None else recorded_split(ckpt.meta)[0]
        base = ngram_score(ckpt.vocab, train_text, text, ngram_order, context=context, unknown=unknown)
        ngram_line = (f"\n  {base.nats_per_char:.4f} nats/char   {base.bits_per_char:.4f} bits/char   perplexity "
                      f"{base.perplexity:.3f}   order-{ngram_order} n-gram (interpolated Kneser-Ney, fitted on "
                      f"{len(train_text):,} training characters); the model is "
                      f"{base.nats_per_char - result.nats_per_char:+.4f} nats/char better")
    to_stdout = per_char is not None and (str(per_char) == "-" or _is_stdout(per_char))
    if per_char is not None:
        if to_stdout:
            for line in surprisal_lines(result):
                sys.stdout.write(line)
            sys.stdout.flush()
        else:
            atomic_write(per_char, lambda f: f.writelines(surprisal_lines(result)), mode="w")
    click.echo(f"{STDIN_NAME if is_stdin(text_file) else text_file}: {result.num_chars:,} characters scored under {ckpt.path}\n"
               f"  {result.nats_per_char:.4f} nats/char   {result.bits_per_char:.4f} bits/char   "
               f"perplexity {result.perplexity:.3f}{ngram_line}", err=to_stdout)


def _is_stdout(path: Path) -> bool:
    """Whether `path` is where stdout already goes (/dev/stdout, or the file it is redirected to):
    then the report is written through stdout, in order, and the summary goes to stderr."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


# ----------------------------------------------------------------------------------------------
# explain


@main.command()
@click.argument("text_file", required=False, type=click.Path(allow_dash=True, path_type=Path))
@click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]")
@click.option("--start", type=int, default=0, show_default=True, help="First character of the text to explain.")
@click.option("--length", type=int, default=None, help="Characters to explain from --start.  [default: to the end]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for explain.html, the figures and finder.csv.  [default: explain/<run name>]")
@click.option("--cell", "cells", multiple=True, metavar="L:h|c:I", help="Show this cell (layer from 1, h or c, unit from 0), e.g. 2:c:37 (repeatable).")
@click.option("--property", "patterns", multiple=True, metavar="NAME=REGEX", help="Score cells against where this regular expression matches (repeatable).")
@click.option("--after", multiple=True, default=(".",), show_default=True, help=r"Score cells against 'the character just read is X' (repeatable; escapes like '\n' work).")
@click.option("--top-k", type=int, default=5, show_default=True, help="Candidates shown per position.")
@click.option("--top-cells", type=int, default=3, show_default=True, help="Best cells listed (and shown) per property.")
@click.option("--position", "lens_position", type=int, default=None, help="Character whose next-character distribution the temperature lens shows.  [default: where the model was least sure, 40 characters in or later]")
@click.option("--temperatures", default="0.5,1,1.5", show_default=True, help="Temperatures of the lens.")
@click.option("--lens-top-k", type=int, default=5, show_default=True, help="The lens's top-k panel (at T=1).")
@click.option("--lens-top-p", type=float, default=0.9, show_default=True, help="The lens's top-p panel (at T=1).")
@click.option("--ngram", "ngram_order", type=int, default=None, metavar="N", help="Compare with an order-N n-gram model fitted on the run's training text.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="The run's training text, if its recorded path moved (the default text's and the n-gram's source).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with characters the model never saw.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def explain(text_file: Path | None, checkpoint: Path | None, start: int, length: int | None, out: Path | None,
            cells: tuple[str, ...], patterns: tuple[str, ...], after: tuple[str, ...], top_k: int, top_cells: int,
            lens_position: int | None, temperatures: str, lens_top_k: int, lens_top_p: float,
            ngram_order: int | None, corpus: Path | None, unknown: str, encoding: str, device: str) -> None:
    """Look inside a model reading a text: an HTML page of its predictions, cells, gates and temperature.

    TEXT_FILE is a text file, or - for stdin; without it, the run's own validation text (the end
    of its recorded training corpus). Writes explain.html (self-contained), gates.png/svg,
    temperature.png/svg, cells.png/svg, finder.csv and timeline.md.
    """
    from .checkpoint import load
    from .data import STDIN_NAME, is_stdin, read_text
    from .explain import explain_run
    from .properties import compile_patterns
    from .runtext import recorded_split, text_slice
    from .runtime import resolve_device
    from .sample import unescape
    from .sweep import parse_temperatures

    compile_patterns(patterns)  # a bad regex is refused before the model loads
    after_chars = [unescape(a) for a in after]
    temps = parse_temperatures(temperatures)
    run_dir = _checkpoint_dir(checkpoint)
    ckpt = load(run_dir, resolve_device(device))
    if text_file is None:
        text = recorded_split(ckpt.meta, corpus)[1]
        label = "the run's validation text"
    else:
        if is_stdin(text_file):
            _stdin_note("the text to explain")
        text = read_text(text_file, encoding=encoding)  # '-': standard input, bounded like any pipe
        label = STDIN_NAME if is_stdin(text_file) else str(text_file)
    text = text_slice(text, start, length)
    out = out or Path("explain") / (run_dir.parent.name if run_dir.is_file() else run_dir.name)
    label += f", characters {start:,}..{start + len(text) - 1:,}"
    click.echo(f"explaining {len(text):,} characters of {label} under {ckpt.path}", err=True)
    result, written = explain_run(ckpt, text, out, ngram_order=ngram_order, corpus=corpus, source={"text": label},
                                  cells=cells, patterns=patterns, after=after_chars, top_k=top_k, top_cells=top_cells,
                                  lens_position=lens_position, temperatures=temps, lens_top_k=lens_top_k,
                                  lens_top_p=lens_top_p, unknown=unknown)
    for r in result.finder:
        best = (f"{r.best.cell} {r.statistic} {r.best.score:.3f} (control {r.control:.3f})" if r.best
                else "-" if r.present else "not in this text")
        click.echo(f"  {r.name:<18} {best}")
    click.echo(f"wrote {written['html']} and the figures beside it", err=True)


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


class _CorpusHelpCommand(click.Command):
    """`data get --help` lists the corpus names; charrnn.corpora is imported only when help is shown,
    so `charrnn --help` stays instant."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from .corpora import CORPORA

        super().format_help_text(ctx, formatter)
        with formatter.section("Corpora (NAME)"):
            formatter.write_dl([(corpus.name, corpus.description) for corpus in CORPORA.values()])


@data.command("get", cls=_CorpusHelpCommand)
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True, help="Where to put it.")
@click.option("--mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="Copy from this local folder instead of downloading.  [default: $CHARRNN_DATA_MIRROR]")
@click.option("--url", default=None, help="Download from this address instead of the public one.")
@click.option("--force", is_flag=True, help="Fetch again, replacing the file there (even one that does not match the sha256).")
def data_get(name: str, data_dir: Path, mirror: Path | None, url: str | None, force: bool) -> None:
    """Fetch corpus NAME into --data-dir, verifying its sha256."""
    from .corpora import get

    path = get(name, data_dir, mirror=mirror, url=url, force=force, log=lambda message: click.echo(message, err=True))
    click.echo(f"{name}: {path} ({path.stat().st_size:,} bytes, sha256 verified)")


@data.command("list")
def data_list() -> None:
    """List the corpora `charrnn data get` knows."""
    from .corpora import CORPORA

    for corpus in CORPORA.values():
        click.echo(f"{corpus.name:<12} {corpus.description}")


# ----------------------------------------------------------------------------------------------
# export


@main.command()
@click.argument("run", type=click.Path(path_type=Path), metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "onnx"]), required=True, help="safetensors: the weights (+ config.json); onnx: a graph of one generation step.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder to write into.  [default: exports/<run name>]")
def export(run: Path, fmt: str, out: Path | None) -> None:
    """Export RUN (a run folder or .pt file) for other runtimes, with a config.json of the model
    config and vocabulary; loadable without charrnn (see the README)."""
    from .checkpoint import load
    from .export import export as export_model

    ckpt = load(run)
    out = out or Path("exports") / (run.parent if run.is_file() else run).resolve().name
    path = export_model(ckpt, out, fmt)
    click.echo(f"wrote {path} and {path.parent / 'config.json'} (from {ckpt.path})")


# ----------------------------------------------------------------------------------------------
# runs


@main.command()
@click.argument("root", type=click.Path(path_type=Path), default=CHECKPOINT_ROOT, metavar="[DIR]")
@click.option("--sort", type=click.Choice(["date", "loss", "name"]), default="date", show_default=True, help="date: last saved first; loss: best validation loss first.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True, help="jsonl: one JSON object per run (every field, nats and bits).")
def runs(root: Path, sort: str, fmt: str) -> None:
    """List the runs below DIR (default checkpoints/): corpus, model, steps, best loss, time, date."""
    import json

    from .runs import list_runs

    found = list_runs(root, sort=sort)
    if fmt == "jsonl":
        for run in found:
            click.echo(json.dumps(run.to_dict(), ensure_ascii=False))
        return
    if not found:
        click.echo(f"no runs under {root}/", err=True)
        return
    click.echo(f"{'RUN':<24} {'CORPUS':<18} {'MODEL':<14} {'PARAMS':>7} {'STEPS':>7} {'BEST VAL (nats/bits)':>20} "
               f"{'TIME':>8}  {'DATE':<16}  FROM")
    for run in found:
        if run.problem:
            click.echo(f"{run.name:<24} ({run.problem})")
            continue
        model = f"{run.model or '?'} {run.num_layers or '?'}x{run.hidden_size or '?'}"
        params = f"{run.parameters / 1e6:.2f}M" if run.parameters else "?"
        loss = "-" if run.best_val_loss is None else f"{run.best_val_loss:.4f} / {run.best_val_bits:.3f}"
        origin = ", ".join(([f"fine-tuned from {run.fine_tuned_from}"] if run.fine_tuned_from else [])
                           + (["resumed"] if run.resumed else [])) or "-"
        date = (run.updated or "?")[:16].replace("T", " ")
        click.echo(f"{run.name:<24} {run.corpus or '?':<18} {model:<14} {params:>7} {run.steps if run.steps is not None else '?':>7} "
                   f"{loss:>20} {fmt_time(run.elapsed):>8}  {date:<16}  {origin}")


# ----------------------------------------------------------------------------------------------
# cache


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


_cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The corpus cache.  [default: $CHARRNN_CACHE_DIR, else ~/.cache/charrnn]")


@main.group()
def cache() -> None:
    """The corpus cache: encoded corpora kept between runs (safe to clear)."""


@cache.command("list")
@_cache_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True, help="jsonl: one JSON object per entry.")
def cache_list(cache_dir: Path | None, fmt: str) -> None:
    """List the cache's entries: corpus, size and last use, most recent first."""
    import json

    from .cache_admin import list_entries
    from .corpus_cache import default_cache_dir

    entries = list_entries(cache_dir)
    if fmt == "jsonl":
        for entry in entries:
            click.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
        return
    click.echo(f"{cache_dir or default_cache_dir()}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
               f"{_size(sum(e.size_bytes for e in entries))}", err=True)
    if entries:
        click.echo(f"{'NAME':<40} {'SIZE':>9}  {'LAST USE':<16}  CORPUS")
    for entry in entries:
        used = entry.to_dict()["last_use"] or "?"
        click.echo(f"{entry.name:<40} {_size(entry.size_bytes):>9}  {used[:16].replace('T', ' '):<16}  {entry.corpus}")


@cache.command("clear")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@_cache_dir_option
def cache_clear(names: tuple[str, ...], cache_dir: Path | None) -> None:
    """Remove cache entries (all, or those NAME matches: an entry's name, its corpus part, or its
    corpus file) that no running run is using; the others are kept and listed with the reason."""
    from .cache_admin import clear

    result = clear(cache_dir, names)
    for entry in result.removed:
        click.echo(f"removed {entry.name} ({_size(entry.size_bytes)}, {entry.corpus})")
    for entry, why in result.skipped:
        click.echo(f"kept {entry.name}: {why}")
    freed = sum(e.size_bytes for e in result.removed)
    click.echo(f"removed {len(result.removed)} entr{'y' if len(result.removed) == 1 else 'ies'} ({_size(freed)}), "
               f"kept {len(result.skipped)}", err=True)


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
@click.option("--corpus", type=click.Path(allow_dash=True, path_type=Path), default=None, help="Training text to compare samples with ('-': standard input).  [default: the path in the checkpoint]")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the training text.")
@click.option("--check", is_flag=True, help="Exit with status 1 unless the spectrum holds (repetition falls, invention rises, greedy loops, T=2 invents a third of its words); needs greedy, T=2 and at least 3 temperatures.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
@_threads_option
def sweep(checkpoint: Path | None, out: Path | None, temperatures: str, greedy: bool, num_samples: int, length: int,
          seed: int, prime: str, corpus: Path | None, encoding: str, check: bool, device: str) -> None:
    """Sample a model across temperatures and measure the repetitive-to-chaotic spectrum."""
    from . import sweep as sweeping

    run_dir = _checkpoint_dir(checkpoint)
    out = out or Path("sweeps") / (run_dir.stem if run_dir.is_file() else run_dir.name)
    config = sweeping.SweepConfig(temperatures=sweeping.parse_temperatures(temperatures), greedy=greedy,
                                  num_samples=num_samples, length=length, seed=seed, prime=prime)
    if check and sweeping.unmet_check_needs(config):  # said now, not as FAILs after the sampling
        raise CharRNNError("--check needs " + "; ".join(sweeping.unmet_check_needs(config)))
    if corpus is not None and str(corpus) == "-":
        _stdin_note("the training text")
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
