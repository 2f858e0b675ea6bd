"""Freezing strategies: which backbone stages train, and at which learning rate.

Adding a strategy = one class here (a subclass of ``FreezingStrategy``) + one YAML in
``conf/strategy/``. The LightningModule only talks to the base-class interface.
"""

from transfer_lightning.strategies.base import FreezingStrategy
from transfer_lightning.strategies.freeze_stages import FreezeStages
from transfer_lightning.strategies.gradual import GradualUnfreeze
from transfer_lightning.strategies.lp_ft import LinearProbeFinetune

__all__ = ["FreezeStages", "FreezingStrategy", "GradualUnfreeze", "LinearProbeFinetune"]
