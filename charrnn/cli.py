"""Command-line interface: parse options, call the library, print. No work happens here.

torch is imported inside the commands, so `charrnn --help` answers instantly.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .config import PRESETS, ModelConfig, TrainConfig, parse_duration
from .errors import CharRNNError

CHECKPOINT_ROOT = "checkpoints"


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
        if self.quiet:
            return
        if kind == "start":
            m, t = event["model_config"], event["train_config"]
            budget = f", time budget {_fmt_time(t['time_budget'])}" if t["time_budget"] else ""
            steps = f", max {t['max_steps']} steps" if t["max_steps"] else ""
            resumed = f", resuming at step {event['resumed_at']}" if event["resumed_at"] else ""
            click.echo(f"{m['num_layers']}x{m['hidden_size']} {m['model'].upper()} "
                       f"({event['params'] / 1e6:.2f}M params, vocab {event['vocab_size']}) on "
                       f"{event['device']} ({event['precision']}), batch {t['batch_size']} x seq {t['seq_len']}"
                       f"{budget}{steps}{resumed} -> {event['run_dir']}", err=True)
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
@click.argument("text_file")
@click.option("--preset", type=click.Choice(["auto", *PRESETS]), default="auto", show_default=True,
              help="Named configuration (see README); every flag below overrides it. "
                   "auto: gpu on CUDA, else by --time-budget (quick <= 5m, cpu10 <= 20m, cpu30).")
@click.option("--model", type=click.Choice(["lstm", "gru", "rnn"]), default=None, help="Recurrent core.  [default: lstm]")
@click.option("--embed-dim", type=click.IntRange(1, 65536), default=None, help="Character embedding size.")
@click.option("--hidden-size", type=click.IntRange(1, 65536), default=None, help="Units per recurrent layer.")
@click.option("--num-layers", type=click.IntRange(1, 64), default=None, help="Recurrent layers.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="Dropout between layers and before the head.")
@click.option("--tie-weights/--no-tie-weights", default=None, help="Share embedding and head weights (needs --embed-dim = --hidden-size).")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None, help="Contiguous streams per step.")
@click.option("--seq-len", type=click.IntRange(1, 1 << 20), default=None, help="Characters per BPTT window.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="Peak learning rate (Adam).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None, help="Decay after warm-up.  [default: cosine]")
@click.option("--warmup-steps", type=click.IntRange(0), default=None, help="Linear learning-rate warm-up steps.")
@click.option("--decay-steps", type=click.IntRange(1), default=None, help="Steps over which the cosine decays (fixes the schedule across resumes).  [default: the whole run]")
@click.option("--weight-decay", type=click.FloatRange(0), default=None, help="AdamW weight decay.")
@click.option("--grad-clip", type=click.FloatRange(0, min_open=True), default=None, help="Clip the gradient's global norm to this.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many steps.")
@click.option("--time-budget", callback=_duration, default=None, help="Stop after this much wall clock, evaluation included (90s, 10m, 1h).")
@click.option("--eval-interval", type=click.IntRange(1), default=None, help="Steps between full validation passes.")
@click.option("--log-interval", type=click.IntRange(1), default=None, help="Steps between progress updates.")
@click.option("--val-frac", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="Share of the text (its end) held out for validation.  [default: 0.1]")
@click.option("--patience", type=click.IntRange(1), default=None, help="Stop after this many evaluations without improvement.")
@click.option("--stateful/--no-stateful", default=None, help="Carry the hidden state across windows (truncated BPTT).  [default: stateful]")
@click.option("--sample-length", type=click.IntRange(0), default=None, help="Characters of sample printed at each evaluation (0: none).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None, help="bf16 autocast where the hardware is fast at it.  [default: auto]")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps.  [default: auto]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed for initialisation and dropout.  [default: 1337]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.  [default: checkpoints/<corpus name>]")
@click.option("--resume", "resume_run", type=click.Path(path_type=Path), default=None, help="Continue the run in this folder exactly where it stopped.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, help="Start from a trained run's weights (fine-tuning on TEXT_FILE).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXT_FILE.")
@click.option("-q", "--quiet", is_flag=True, help="Only the final summary.")
def train(text_file: str, preset: str, out: Path | None, resume_run: Path | None, init_from: Path | None,
          encoding: str, quiet: bool, **flags: Any) -> None:
    """Train a model on TEXT_FILE (UTF-8 text) and keep its best checkpoint."""
    from . import train as training
    from .data import read_text

    text = read_text(text_file, encoding=encoding)
    corpus = {"path": str(Path(text_file).resolve()), "name": Path(text_file).name}
    flags = {k: v for k, v in flags.items() if v is not None}
    model_keys = {f for f in ModelConfig.__dataclass_fields__} - {"vocab_size"}
    model_flags = {k: v for k, v in flags.items() if k in model_keys}
    train_flags = {k: v for k, v in flags.items() if k not in model_keys}
    progress = _Progress(quiet)
    if resume_run is not None:
        if init_from is not None or model_flags:
            raise CharRNNError("--resume continues a run as it was; it takes no --init-from or model options")
        result = training.resume(text, resume_run, log=progress, **train_flags)
    else:
        model_config, train_config = _configs(preset, model_flags, train_flags)
        run_dir = out or _runs_dir_for(text_file)
        _refuse_overwrite(run_dir, explicit=out is not None)
        if init_from is not None:
            result = training.fine_tune(text, run_dir, init_from, train_config,
                                        dropout=model_flags.get("dropout"), corpus=corpus, log=progress)
        else:
            result = training.train(text, run_dir, model_config, train_config, corpus=corpus, log=progress)
    _summary(result)


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


# ----------------------------------------------------------------------------------------------
# sample


def _checkpoint_dir(checkpoint: Path | None) -> Path:
    from .checkpoint import find_latest

    if checkpoint is not None:
        return checkpoint
    run = find_latest(CHECKPOINT_ROOT)
    click.echo(f"using the most recent run: {run}", err=True)
    return run


@main.command()
@click.option("-c", "--checkpoint", type=click.Path(path_type=Path), default=None, help="Run folder or .pt file.  [default: the most recent run]")
@click.option("-t", "--temperature", type=click.FloatRange(0), default=0.8, show_default=True, help="Softmax temperature; 0 means greedy.")
@click.option("-n", "--length", type=click.IntRange(0, 100_000_000), default=1000, show_default=True, help="Characters to generate.")
@click.option("--prime", default="", help="Text to warm the hidden state with (echoed before the sample).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Same seed, same text.  [default: random, printed]")
@click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="What to do with prime characters the model never saw.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
def sample(checkpoint: Path | None, temperature: float, length: int, prime: str, seed: int | None,
           greedy: bool, unknown: str, device: str) -> None:
    """Generate text from a trained model, one character at a time."""
    from .checkpoint import load
    from .runtime import resolve_device
    from .sample import generate

    ckpt = load(_checkpoint_dir(checkpoint), resolve_device(device))
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    click.echo(f"seed {seed}, temperature {'greedy' if greedy or temperature == 0 else temperature}", err=True)
    out = sys.stdout
    out.write(prime)
    flush_each = out.isatty()

    def emit(char: str) -> None:
        out.write(char)
        if flush_each or char == "\n":
            out.flush()

    generate(ckpt.model, ckpt.vocab, length, prime=prime, temperature=temperature, greedy=greedy,
             seed=seed, unknown=unknown, on_text=emit)
    out.write("\n")
    out.flush()


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


if __name__ == "__main__":
    main()
