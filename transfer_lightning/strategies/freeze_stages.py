"""A fixed freezing depth: the presets feature_extract (5), finetune (4) and full (0)."""

from transfer_lightning.strategies.base import FreezingStrategy


class FreezeStages(FreezingStrategy):
    """Freeze the first ``frozen_stages`` stages for the whole run.

    ``frozen_stages=5`` is feature extraction (only the new head trains), ``4`` fine-tunes
    layer4 + head (the book's second example), ``0`` trains everything.
    """
