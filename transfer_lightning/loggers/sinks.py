"""What each kind of logger takes besides the metrics Lightning sends it: hyperparameters, figures,
files and tags. One class per kind; a new logger kind is one subclass and one line in ``_SINKS``.

=============  ===============================  ==========================  ==================
logger         figures                          files (run_summary.json)    tags (the lineage)
=============  ===============================  ==========================  ==================
TensorBoard    ``add_image`` (Images tab)       (beside it in the folder)   -
MLflow         ``log_image`` by key and step    artifacts                   run tags
W&B            ``log_image`` (media)            ``save`` (run files)        config + run tags
CSV            -                                (beside it in the folder)   -
=============  ===============================  ==========================  ==================

TensorBoard's hyperparameters are written once the metrics exist (``run/dashboard.py``
``write_hparams``); the other loggers get the same columns when training starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)
_WANDB_TAG_LIMIT = 64  # W&B refuses longer tags


class LoggerSink:
    """A logger that takes metrics and hyperparameters only (CSV, or a kind this module does not know)."""

    takes_figures = False

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.logger.log_hyperparams(dict(params))

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """``image``: an ``H x W x 3`` uint8 RGB array."""

    def log_file(self, path: Path) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass


class TensorBoardSink(LoggerSink):
    takes_figures = True

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass  # with the metrics they are compared on, at the end (run/dashboard.py write_hparams)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")


class MlflowSink(LoggerSink):
    takes_figures = True

    def log_params(self, params: Mapping[str, Any]) -> None:
        """MLflow refuses to change a logged parameter: a resumed run logs the parameters it lacks and
        records the ones its command changed (``trainer.max_epochs``, ``overrides``) as ``resumed.<key>`` tags."""
        logged = self.logger.experiment.get_run(self.logger.run_id).data.params
        new = {key: value for key, value in params.items() if key not in logged}
        changed = {key: str(value) for key, value in params.items() if key in logged and _param(value) != logged[key]}
        if new:
            self.logger.log_hyperparams(new)
        if changed:
            self.set_tags({f"resumed.{key}": value for key, value in changed.items()})

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.logger.experiment.log_image(self.logger.run_id, image, key=tag, step=step)

    def log_file(self, path: Path) -> None:
        self.logger.experiment.log_artifact(self.logger.run_id, str(path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.logger.experiment.set_tag(self.logger.run_id, key, value)


class WandbSink(LoggerSink):
    takes_figures = True

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.logger.log_image(key=tag, images=[image], step=step)

    def log_file(self, path: Path) -> None:
        self.logger.experiment.save(str(path), base_path=str(path.parent), policy="now")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Every tag in the run's config (full values); W&B's own tags hold the short ones."""
        run = self.logger.experiment
        run.config.update({f"tags/{key}": value for key, value in tags.items()}, allow_val_change=True)
        short = [f"{key}: {value}" for key, value in tags.items() if len(f"{key}: {value}") <= _WANDB_TAG_LIMIT]
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *short]))


_SINKS: tuple[tuple[type[Logger], type[LoggerSink]], ...] = (
    (TensorBoardLogger, TensorBoardSink),
    (MLFlowLogger, MlflowSink),
    (WandbLogger, WandbSink),
    (CSVLogger, LoggerSink),
)


def sink_for(logger: Logger) -> LoggerSink:
    kind = next((sink for cls, sink in _SINKS if isinstance(logger, cls)), LoggerSink)
    return kind(logger)


def takes_figures(loggers: list[Logger]) -> bool:
    """Whether any of ``loggers`` shows images (so drawing a figure is worth it)."""
    return any(sink_for(logger).takes_figures for logger in loggers)


def log_image(loggers: list[Logger], tag: str, image: np.ndarray, step: int) -> bool:
    """Send ``image`` (``H x W x 3`` uint8 RGB) to every logger that shows images; returns whether any took it."""
    sinks = [sink for sink in map(sink_for, loggers) if sink.takes_figures]
    for sink in sinks:
        sink.log_image(tag, image, step)
    return bool(sinks)


def log_params(loggers: list[Logger], params: Mapping[str, Any]) -> None:
    for logger in loggers:
        sink_for(logger).log_params(params)


def log_file(loggers: list[Logger], path: Path) -> None:
    for logger in loggers:
        sink_for(logger).log_file(path)


def set_tags(loggers: list[Logger], tags: Mapping[str, str]) -> None:
    for logger in loggers:
        sink_for(logger).set_tags(tags)


def figure_image(figure: Any) -> np.ndarray:
    """A matplotlib figure drawn as an ``H x W x 3`` uint8 array, as TensorBoard's ``add_figure`` draws it (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _param(value: Any) -> str:
    return str(value)[:250]  # what Lightning's MLFlowLogger.log_hyperparams stores
