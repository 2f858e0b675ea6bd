"""A fixed freezing depth: the presets feature_extract (all), finetune (all_but_last) and full (0)."""

from transfer_lightning.strategies.base import FreezingStrategy


class FreezeStages(FreezingStrategy):
    """Freeze the first ``frozen_stages`` stages for the whole run.

    ``frozen_stages="all"`` is feature extraction (only the new head trains), ``"all_but_last"``
    fine-tunes the last stage + head (layer4 on a ResNet: the book's second example), ``0``
    trains everything; a number counts stages from the input (0..N).
    """
