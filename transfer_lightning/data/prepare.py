"""Lightning's ``prepare_data`` contract before ``fit``: one process per node downloads or writes the
data, the others only read it (in ``setup``).

``train()`` needs the classes (``setup``) before ``trainer.fit``, where Lightning would call
``prepare_data`` itself, so it applies the contract here with Lightning's own rank and barrier:

- one process, or Lightning's DDP launcher (``trainer=ddp`` on one machine): this process prepares;
  the other processes are started later, by ``fit``, with ``LOCAL_RANK`` > 0, and skip it;
- processes started by torchrun or SLURM (``tasks_per_node`` > 1) all exist already: local rank 0
  prepares while the others wait at Lightning's barrier (its process group, which ``fit`` reuses).
"""

from __future__ import annotations

import lightning as L


def prepare_data_once_per_node(datamodule: L.LightningDataModule, trainer: L.Trainer) -> None:
    """Call ``datamodule.prepare_data()`` on local rank 0 only; the node's other processes wait for it."""
    started_elsewhere = trainer.strategy.launcher is None and trainer.world_size > 1
    if started_elsewhere:
        trainer.strategy.setup_environment()  # the process group, for the barrier below
    if trainer.local_rank == 0:
        datamodule.prepare_data()
    if started_elsewhere:
        trainer.strategy.barrier("prepare_data")
