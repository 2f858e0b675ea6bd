"""How a run ends, recorded. A completed run: ``record_completed`` writes its summary, the dashboards' row and
the printed report. A run that does not finish: a summary that says so, and messages that say what to do.

``recorded_outcome`` wraps a run. A NaN loss, a bad checkpoint or any other failure leaves
``run_summary.json`` with ``status: "failed"`` and the one-line reason; Ctrl-C leaves
``status: "interrupted"``; running out of GPU memory becomes a ``UserError`` that names the
settings that shrink memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from omegaconf import DictConfig

from transfer_lightning.callbacks.graceful_stop import RunInterrupted, last_checkpoint_path
from transfer_lightning.loggers.publish import publish_run_end
from transfer_lightning.run.dashboard import write_hparams
from transfer_lightning.run.resume import ResumeRefused
from transfer_lightning.run.summary import print_report, write_failure_summary, write_summary
from transfer_lightning.utils.errors import UserError, first_line

if TYPE_CHECKING:
    from transfer_lightning.run.assemble import Run

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What is known about a run so far; ``train()`` fills it in as objects come to life."""

    fields: dict[str, Any] = field(default_factory=dict)
    trainer: L.Trainer | None = None

    def progress(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        checkpoint = self.trainer.checkpoint_callback
        last = getattr(checkpoint, "last_model_path", "") if checkpoint else ""
        return {
            "epochs": self.trainer.current_epoch,
            "global_step": self.trainer.global_step,
            "last_ckpt": last if last and Path(last).is_file() else None,
        }


def record_completed(run: Run, summary: dict[str, Any], run_dir: Path) -> Path:
    """A completed run's hyperparameter row of the dashboards, its ``run_summary.json`` (also handed to the
    loggers) and the printed report. Returns the summary's path."""
    write_hparams(
        run.trainer.loggers, run.hparams, {"val/acc_best": summary["best_val_acc"], "test/acc": summary["test_acc"]}
    )
    path = write_summary(run_dir, summary)
    publish_run_end(run.trainer.loggers, path)
    print_report(summary)
    return path


@contextmanager
def recorded_outcome(run_dir: str | Path, cfg: DictConfig) -> Iterator[RunRecord]:
    """Run the body; on failure or Ctrl-C write the summary that says so and re-raise."""
    record = RunRecord()
    try:
        yield record
    except RunInterrupted as error:
        _record(run_dir, record, "interrupted", str(error))
        raise
    except KeyboardInterrupt:
        _record(run_dir, record, "interrupted", _stopped_at_once(record))
        raise
    except SystemExit:  # Lightning turns a second Ctrl-C during fit into sys.exit(1)
        if record.trainer is not None and record.trainer.interrupted:
            _record(run_dir, record, "interrupted", _stopped_at_once(record))
        raise
    except ResumeRefused:
        raise  # nothing ran: the resumed run's own record stays as it was
    except UserError as error:
        _record(run_dir, record, "failed", str(error))
        raise
    except Exception as error:
        if is_out_of_memory(error):
            user_error = out_of_memory_error(error, cfg)
            _record(run_dir, record, "failed", str(user_error))
            raise user_error from error
        _record(run_dir, record, "failed", f"{type(error).__name__}: {first_line(error)}")
        raise


def _stopped_at_once(record: RunRecord) -> str:
    """A Ctrl-C that no step boundary caught (before training, or Lightning's own): the checkpoint it leaves."""
    last = last_checkpoint_path(record.trainer) if record.trainer is not None else None
    if last is not None and last.is_file():
        return f"stopped at once by Ctrl-C; {last} is the one before, intact"
    return "stopped at once by Ctrl-C; no checkpoint yet"


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def out_of_memory_error(error: BaseException, cfg: DictConfig) -> UserError:
    data = cfg.get("data") or {}
    image_size = data.get("image_size") or "null: the weights' size"
    return UserError(
        f"the device ran out of memory ({first_line(error, 120)}); use a smaller "
        f"data.batch_size (now {data.get('batch_size')}) or data.image_size (now {image_size}); "
        "trainer.accumulate_grad_batches=N keeps the effective batch size"
    )


def _record(run_dir: str | Path, record: RunRecord, status: str, reason: str) -> None:
    if record.trainer is not None and not record.trainer.is_global_zero:
        return  # under DDP every process gets here; rank 0 writes the one summary
    write_failure_summary(Path(run_dir), status, reason, **record.fields, **record.progress())
    _log_to_files(logging.WARNING if status == "interrupted" else logging.ERROR, f"Run {status}: {reason}")


def _log_to_files(level: int, message: str) -> None:
    """``message`` in the run's log file (``train.log``), the same sentence as ``run_summary.json``'s.

    Only there: the terminal gets it once already, as the command's last line on stderr.
    """
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and level >= handler.level:
            handler.handle(record)
