"""`charrnn train` and the handling of its options: presets, the TOML config file, resume checks, the summary."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..config import (
    MAX_GRAD_CLIP,
    MAX_LR,
    MAX_STEPS,
    MAX_WEIGHT_DECAY,
    PRESETS,
    ModelConfig,
    TrainConfig,
    parse_duration,
)
from ..errors import CharRNNError
from ..progress import TrainProgress, fmt_time
from .common import CHECKPOINT_ROOT, _stdin_note, _threads_option

# `train` stopped by a signal saves everything, then exits with the shell's code for that signal
# (128 + signal number), so scripts can tell "finished" (0) from "stopped early, resumable".
STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except CharRNNError as exc:
        raise click.BadParameter(str(exc)) from None


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


@click.command()
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
    from ..corpus_cache import CorpusFiles, parse_separator, run_name
    from ..distributed import is_main_process, launched_by_torchrun

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
    from ..validation import ValidationFiles

    validation = ValidationFiles.from_paths(val_file, encoding=encoding, separator=parse_separator(separator),
                                            unknown=val_unknown) if val_file else None
    if ddp and not launched_by_torchrun():
        raise CharRNNError("--ddp needs several processes: launch with torchrun --nproc_per_node N -m charrnn train ...")
    main_process = is_main_process()  # under torchrun only rank 0 prints
    progress = TrainProgress(quiet or not main_process)
    if options["tensorboard"] is not None and main_process:  # one more listener on the trainer's events
        from ..tensorboard_log import TensorBoardLog, tee

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
    from ..data import STDIN_NAME, read_text
    from ..distributed import launched_by_torchrun

    if len(text_files) > 1:
        raise CharRNNError("- (standard input) is the whole corpus; it cannot be joined with other files")
    if launched_by_torchrun():
        raise CharRNNError("under torchrun only one process reads standard input; save the text to a file")
    _stdin_note("the training text")
    return read_text("-", encoding=encoding), {"path": STDIN_NAME, "name": STDIN_NAME}


# Config-file keys that are not named like the train command's parameters.
_CONFIG_PARAMS = {"corpus": "text_files"}


def _with_config_file(ctx: click.Context, config_path: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """The train command's options with a config file's values under those given on the command line."""
    from click.core import ParameterSource

    from ..config_file import escape_separator, read

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
    from ..config import preset_for
    from ..runtime import resolve_device

    return preset_for(resolve_device(train_flags.get("device", "auto")).type, train_flags.get("time_budget"))


def _resolved_config(options: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Preset + file + options as one plain configuration (charrnn.config_file.resolved)."""
    from ..config_file import resolved
    from ..corpus_cache import parse_separator

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
    from ..config_file import dumps

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
    from ..distributed import shutdown

    try:
        yield
    finally:
        shutdown()


def _configs(preset: str, model_flags: dict[str, Any], train_flags: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    if preset == "auto":
        from ..config import preset_for
        from ..runtime import resolve_device

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
    from ..advice import undertrained_note

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
