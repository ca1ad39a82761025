"""What happens around training, as listeners on the trainer's events: the per-step metrics file,
the loss plot and the samples printed as training goes.

The trainer knows nothing of files, figures or sampling; it calls these hooks in order. A listener
that wants to add something (TensorBoard, a web dashboard) subclasses `TrainListener` and is passed
to `train(..., listeners=[...])`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_write
from .errors import CharRNNError

if TYPE_CHECKING:
    from .train import Trainer


class TrainListener:
    """Hooks called by `Trainer.run()`; every one is optional."""

    def on_start(self, trainer: Trainer) -> None:
        """The run folder exists and training is about to start (or continue)."""

    def on_resume(self, trainer: Trainer) -> None:
        """The trainer was restored from last.pt at `trainer.step`."""

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """A step finished; `row` is its metrics row (step, loss, lr, time)."""

    def before_eval(self, trainer: Trainer) -> None:
        """An evaluation (and a checkpoint save) is about to happen."""

    def on_eval(self, trainer: Trainer, event: dict[str, Any]) -> None:
        """An evaluation finished and was saved; `event` is about to be logged and may be added to."""

    def rehearse(self, trainer: Trainer) -> None:
        """Do once, writing nothing, what `on_eval` will do, so the time budget can count its cost
        before the first evaluation (one-time costs such as imports are paid here too)."""

    def on_end(self, trainer: Trainer, failed: bool) -> None:
        """Training ended, normally or (`failed`) by an error on its way out."""


class MetricsFile(TrainListener):
    """metrics.jsonl, one row per step. A failed write (disk full, file too large) stops training
    with the file named; the checkpoints are untouched, and rows after the last checkpoint are
    dropped on resume anyway."""

    def __init__(self, path: Path, *, fresh: bool):
        self.path = path
        self.fresh = fresh  # a new run replaces the metrics of any run that was in its folder
        self.file: Any = None

    def _failed(self, exc: OSError) -> CharRNNError:
        return CharRNNError(f"could not write {self.path}: {exc.strerror or exc}; the checkpoints are unchanged, "
                            "so --resume continues once there is room")

    def on_resume(self, trainer: Trainer) -> None:
        """Drop rows logged after the checkpoint we resume from (they were lost with it)."""
        self.fresh = False
        if not self.path.exists():
            return
        keep = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line).get("step", 0) <= trainer.step:
                        keep.append(line)
                except (json.JSONDecodeError, TypeError, AttributeError):
                    continue  # a line torn by a kill
        atomic_write(self.path, lambda f: f.writelines(keep), mode="w")

    def on_start(self, trainer: Trainer) -> None:
        if self.fresh and self.path.exists():
            self.path.unlink()
        self.fresh = False  # a second run() of the same trainer continues the file
        self.file = open(self.path, "a", encoding="utf-8")

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise self._failed(exc) from None

    def before_eval(self, trainer: Trainer) -> None:
        # On disk before the checkpoint, so a kill after the save never loses rows it covers.
        try:
            self.file.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def on_end(self, trainer: Trainer, failed: bool) -> None:
        if self.file is None:
            return
        try:
            self.file.close()
        except OSError as exc:
            if not failed:  # the error on its way out says more than a failed last flush
                raise self._failed(exc) from None


class LossPlot(TrainListener):
    """losses.png, redrawn after every evaluation from a bounded per-step curve."""

    def __init__(self, path: Path, metrics: Path):
        from .plots import LossCurve

        self.path = path
        self.metrics = metrics
        self.curve = LossCurve()  # the per-step loss for the plot, bounded however long the run

    def on_resume(self, trainer: Trainer) -> None:
        from .plots import LossCurve

        self.curve = LossCurve.from_metrics(self.metrics)  # read after MetricsFile cut it to the checkpoint

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.curve.add(row["step"], row["time"], row["loss"])

    def _draw(self, trainer: Trainer, path: Path | None) -> None:
        from .plots import plot_losses

        starts = [(s["step"], s["time"], s["label"]) for s in trainer.extra_meta.get("starts", [])]
        plot_losses(trainer.record.history, path, metrics=self.curve, title=trainer.run_dir.resolve().name, starts=starts)

    def on_eval(self, trainer: Trainer, event: dict[str, Any]) -> None:
        try:
            self._draw(trainer, self.path)
        except Exception as exc:  # a plot must never stop training
            trainer.log({"event": "warning", "message": f"could not draw the loss plot: {exc}"})

    def on_start(self, trainer: Trainer) -> None:
        from .plots import load_pyplot

        load_pyplot()  # once per process, on the clock but not in every plot's cost (see rehearse)

    def rehearse(self, trainer: Trainer) -> None:
        with contextlib.suppress(Exception):
            self._draw(trainer, None)


class Samples(TrainListener):
    """A sample of the (averaged, with --ema) model at each evaluation, or every `sample_interval` steps."""

    def _sample(self, trainer: Trainer) -> str:
        from .sample import generate

        model = trainer.eval_model
        was_training = model.training
        try:
            return generate(model, trainer.vocab, trainer.cfg.sample_length, temperature=0.8, seed=trainer.cfg.seed)
        finally:
            model.train(was_training)

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        cfg = trainer.cfg
        if cfg.sample_interval and cfg.sample_length and trainer.step % cfg.sample_interval == 0:
            trainer.log({"event": "sample", "step": trainer.step, "sample": self._sample(trainer)})

    def on_eval(self, trainer: Trainer, event: dict[str, Any]) -> None:
        if trainer.cfg.sample_length and trainer.cfg.sample_interval == 0:
            event["sample"] = self._sample(trainer)


class RunConfig(TrainListener):
    """config.toml: what repeats this run (`charrnn train --config RUN/config.toml`). A resumed run
    keeps the file its first session wrote."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = settings  # the resolved configuration (CLI); None: made from the trainer's configs

    def on_start(self, trainer: Trainer) -> None:
        from . import config_file

        if trainer.step and (trainer.run_dir / config_file.CONFIG_FILE).exists():
            return
        settings = self.settings
        if settings is None:  # called from the library: the configs, the corpus if it has a path, and so on
            path, meta = trainer.corpus.get("path"), trainer.extra_meta
            data = {"corpus": trainer.corpus.get("inputs", [path])} if path else {}
            if meta.get("init_from"):
                data["init_from"] = meta["init_from"]
            if meta.get("validation"):
                data.update(val_file=meta["validation"]["files"], val_unknown=meta["validation"]["unknown"])
            settings = config_file.resolved(trainer.model_config, trainer.cfg, data)
        config_file.write(trainer.run_dir, settings)


def default_listeners(run_dir: str | os.PathLike, *, fresh: bool,
                      settings: dict[str, Any] | None = None) -> list[TrainListener]:
    """What `charrnn train` writes into a run folder besides the checkpoints (samples.jsonl: the
    training timeline, charrnn.timeline)."""
    from .timeline import SAMPLES_FILE, SampleFile

    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    return [RunConfig(settings), MetricsFile(metrics, fresh=fresh), LossPlot(run_dir / "losses.png", metrics),
            Samples(), SampleFile(run_dir / SAMPLES_FILE, fresh=fresh)]  # after Samples, which draws the sample
