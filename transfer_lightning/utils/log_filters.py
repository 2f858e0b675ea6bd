"""The one place where messages that do not help here are dropped, where they are emitted.

Everything this project logs, and every Lightning warning not listed here, still shows. Dropped:
Lightning's advertising (the "💡 Tip:" lines for its cloud logger and model registry),
warnings known to be harmless in this project, and under DDP the other processes' info lines
(every process runs the same setup; rank 0 says it once, the others keep their warnings and errors).
Lightning's own lines are printed once, by the job's logging (Hydra's console and ``train.log``).
"""

from __future__ import annotations

import logging
import warnings

ADVERTISING_PREFIX = "💡 Tip:"
PROJECT_LOGGER = "transfer_lightning"  # the parent of every module's logger
HARMLESS_WARNINGS = (
    # frozen stages stay in eval mode on purpose: their output must not change (no BatchNorm
    # statistics moving, no dropout or stochastic depth;
    # strategies/base.py); Lightning notes any module in eval mode when fit starts
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # conf/hydra/launcher/submitit_slurm.yaml extends the plugin's schema of the same name on
    # purpose (so `hydra/launcher=submitit_slurm` gives this project's defaults); Hydra 1.3 supports it
    r"[\s\S]*validated against ConfigStore schema with the same name",
    # Lightning's own call of a torch API that torch 2.14 deprecates; nothing a user can change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # printed by every command on a machine with SLURM's tools, even a predict on a login node; this
    # project runs on SLURM through hydra/launcher=submitit_slurm (docs/distributed.md)
    r"The `srun` command is available on your system but is not used",
    # small data: the epoch's metrics are logged anyway (on_epoch), only the per-step points are fewer
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _DropAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISING_PREFIX)


def install_log_filters() -> None:
    """Drop the advertising, the harmless warnings and other ranks' info lines (idempotent; call once per process)."""
    import lightning.pytorch  # noqa: F401 - sets the logger that rank_zero_info writes to
    from lightning.pytorch.utilities import rank_zero_only
    from lightning_utilities.core import rank_zero

    if rank_zero_only.rank != 0:  # the rank its launcher (torchrun, srun, Lightning's DDP) gave this process
        logging.getLogger(PROJECT_LOGGER).setLevel(logging.WARNING)

    if not any(isinstance(existing, _DropAdvertising) for existing in rank_zero.log.filters):
        rank_zero.log.addFilter(_DropAdvertising())
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    print_lightning_once()


def print_lightning_once() -> None:
    """Lightning's lines shown once, as the job's other lines, and kept in ``train.log``: where the root logger
    prints to the console (Hydra's job logging), Lightning's packages' own console handlers go and their
    lines propagate to it. Without them a single run printed each line twice (the ``lightning`` package's
    ``INFO: ...`` on stderr, the job's line on stdout), and a sweep job printed it bare on stderr and left
    it out of the job's ``train.log`` (``lightning.pytorch`` stops propagating when it is imported before
    any logging is set up). Elsewhere (Lightning used from Python, no logging configured) nothing changes."""
    root_handlers = logging.getLogger().handlers
    if not any(_is_console(handler) for handler in root_handlers):
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [handler for handler in logger.handlers if _is_console(handler)]:
            logger.removeHandler(handler)
        logger.propagate = True


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
