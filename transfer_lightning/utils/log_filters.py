"""The one place where messages that do not help here are dropped, where they are emitted.

Everything this project logs, and every Lightning warning not listed here, still shows. Dropped:
Lightning's advertising (the "💡 Tip:" lines for its cloud logger and model registry),
warnings known to be harmless in this project, and under DDP the other processes' info lines
(every process runs the same setup; rank 0 says it once, the others keep their warnings and errors).
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
