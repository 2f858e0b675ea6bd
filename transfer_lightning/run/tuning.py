"""Lightning's learning-rate finder before fit: a plot, a suggestion, and (optionally) ``optimizer.lr``.

The finder sweeps the rate exponentially from ``tune.min_lr`` to ``tune.max_lr`` over
``tune.num_training`` steps and suggests the rate of steepest loss descent. Lightning sets every
parameter group to the same rate; our module re-derives each group from the head's before every
step (``FreezingStrategy.update_learning_rates``), so the sweep is over the *head's* rate with the
strategy's ratios (``lr_decay``) and epoch-0 gates held: the suggestion is a value for
``optimizer.lr``. The finder's steps are undone afterwards (Lightning restores the weights and
optimizer from a temporary ``.lr_find_*.ckpt`` in the run folder, outside ``checkpoints/``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchmetrics import Metric

from transfer_lightning.callbacks.figure_logging import has_figure_logger, log_image
from transfer_lightning.config.schemas import LR_FIND_MIN_STEPS
from transfer_lightning.loggers.sinks import figure_image
from transfer_lightning.run.checkpoint import load_checkpoint_safely
from transfer_lightning.run.model_record import read_model_record
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_save_figure, atomic_write_text
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger(__name__)
PLOT_FILE = "lr_find.png"


def find_learning_rate(
    cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, run_dir: Path
) -> dict[str, Any] | None:
    """Run the finder when ``tune.lr_find`` is set; returns what it found (for the run summary)."""
    tune = cfg.get("tune")
    if not tune or not tune.lr_find:
        return None
    if cfg.get("ckpt_path"):  # resumed: the finder ran when the run started (keep_found_learning_rate)
        log.info("LR finder: not run again on resume; optimizer.lr=%g as the run started with", cfg.optimizer.lr)
        return {"resumed": True, "lr": float(cfg.optimizer.lr)}
    _check_setup(trainer)
    _check_steps_fit(int(tune.num_training), trainer, datamodule)
    lr_before = module.learning_rate
    with _finder_progress(int(tune.num_training)):
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=float(tune.min_lr),
            max_lr=float(tune.max_lr),
            num_training=int(tune.num_training),
            update_attr=False,
        )
    _reset_metrics(module)
    steps = len(finder.results.get("lr", []))
    per_epoch = -(-trainer.num_training_batches // trainer.accumulate_grad_batches)  # optimizer steps
    if steps > per_epoch:
        log.warning(
            "The LR finder ran %d steps, more than one epoch (%d optimizer steps): a schedule that changes at "
            "epoch boundaries (strategy=gradual) was swept partly with later epochs' settings",
            steps,
            per_epoch,
        )
    suggestion = finder.suggestion()
    plot = _save_plot(finder, run_dir / PLOT_FILE, trainer, suggestion)
    applied = bool(tune.apply) and suggestion is not None
    if suggestion is None:
        log.warning(
            "The LR finder could not suggest a learning rate (%d steps; raise tune.num_training or the batches "
            "per epoch); optimizer.lr stays %g",
            steps,
            lr_before,
        )
    elif applied:
        module.set_learning_rate(suggestion)
        cfg.optimizer.lr = suggestion
        _record_in_saved_config(suggestion)
        log.info("LR finder: optimizer.lr %g -> %g (tune.apply=false keeps the configured rate)", lr_before, suggestion)
    else:
        log.info("LR finder suggests optimizer.lr=%g; keeping %g (tune.apply=false)", suggestion, lr_before)
    if suggestion is not None:
        for logger in trainer.loggers:
            logger.log_metrics({"tune/lr_suggestion": suggestion}, step=0)
    return {"suggestion": suggestion, "applied": applied, "lr_before": lr_before, "steps": steps, "plot": str(plot)}


def keep_found_learning_rate(cfg: DictConfig, ckpt_path: str) -> None:
    """Resuming a run whose finder set ``optimizer.lr``: that rate is part of the run's state, so it is
    taken from the checkpoint (``ckpt_path=...`` typed with the run's original command still fits)."""
    tune = cfg.get("tune")
    if not tune or not tune.lr_find or not tune.apply:
        return
    saved = read_model_record(load_checkpoint_safely(ckpt_path), ckpt_path).optimizer.get("lr")
    if saved is not None and saved != cfg.optimizer.lr:
        log.info("LR finder: optimizer.lr=%g, the rate the run found (from %s)", saved, Path(ckpt_path).name)
        cfg.optimizer.lr = saved


def _record_in_saved_config(rate: float) -> None:
    """Write the found rate into the run's ``.hydra/config.yaml``: the run's config then says what it trained
    with, and ``resume=<run>`` continues with it."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    path = Path(hydra.runtime.output_dir) / str(hydra.output_subdir) / "config.yaml"
    if not path.is_file():
        return
    saved = OmegaConf.load(path)
    saved.optimizer.lr = rate
    atomic_write_text(path, OmegaConf.to_yaml(saved))


def _check_setup(trainer: L.Trainer) -> None:
    if trainer.world_size > 1 or trainer.num_nodes > 1:
        raise UserError(
            "tune.lr_find=true runs on one device; run it without trainer.strategy=ddp / trainer.devices>1, "
            "then train the distributed run with optimizer.lr=<suggestion>"
        )
    if trainer.fast_dev_run:
        raise UserError("tune.lr_find=true does nothing with trainer.fast_dev_run; drop one of the two")


def _check_steps_fit(num_training: int, trainer: L.Trainer, datamodule: L.LightningDataModule) -> None:
    """The finder's steps must fit in the run's epochs: it stops at ``trainer.max_epochs``, short of
    ``tune.max_lr``, and Lightning then blames "diverging loss". A step is an optimizer step: with
    ``trainer.accumulate_grad_batches=k`` it takes k batches (Lightning's finder counts them so)."""
    if trainer.max_epochs is None or trainer.max_epochs < 0:
        return
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if limit is not None:
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
    accumulate = trainer.accumulate_grad_batches
    steps = -(-batches // accumulate)  # an epoch's last, partial accumulation is a step too
    available = steps * trainer.max_epochs
    if available < num_training:
        # every fix offered passes the checks: tune.num_training has a floor (run/validation.py)
        fixes = [f"set tune.num_training={available} or less (at least {LR_FIND_MIN_STEPS})"]
        fixes = fixes if available >= LR_FIND_MIN_STEPS else []
        fixes += [f"set trainer.max_epochs={math.ceil(num_training / steps)} or more"] if steps else []
        per_step = f" of {accumulate} batches (trainer.accumulate_grad_batches)" if accumulate > 1 else ""
        raise UserError(
            f"the LR finder needs tune.num_training={num_training} training steps, but this run has only "
            f"{available} ({steps} steps{per_step} per epoch x trainer.max_epochs={trainer.max_epochs}), so it "
            f"would stop early, before reaching tune.max_lr; {', or '.join(fixes + ['give an epoch more batches'])} "
            "(a smaller data.batch_size)"
        )


@contextmanager
def _finder_progress(total: int) -> Iterator[None]:
    """Our progress for the finder's steps: each one is an optimizer step, counted by torch's public
    step hook (the finder replaces the trainer's callbacks while it runs, so no callback of ours sees
    them). Lightning's own tqdm bar for it is switched off by ``TQDM_DISABLE``, set where training
    starts (``transfer_lightning/__main__.py``): tqdm reads its defaults when it is imported."""
    with PhaseProgress("LR finder", total, unit="steps", faster="a smaller tune.num_training") as progress:
        handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: progress.advance())
        try:
            yield
        finally:
            handle.remove()


def _reset_metrics(module: L.LightningModule) -> None:
    """The finder may run a validation pass; its accuracies must not count towards the run's."""
    for metric in module.modules():
        if isinstance(metric, Metric):
            metric.reset()


def _save_plot(finder: Any, path: Path, trainer: L.Trainer, suggestion: float | None) -> Path:
    figure = finder.plot(suggest=suggestion is not None)
    axes = figure.axes[0]
    axes.set_xlabel("learning rate of the head (optimizer.lr); other groups keep their lr_decay ratios")
    title = f"LR finder: suggestion {suggestion:.3g}" if suggestion is not None else "LR finder: no suggestion"
    axes.set_title(title)
    atomic_save_figure(figure, path, dpi=100, bbox_inches="tight")
    if has_figure_logger(trainer):
        log_image(trainer, "tune/lr_find", figure_image(figure), step=0)
    plt.close(figure)
    log.info("LR finder plot: %s", path)
    return path
