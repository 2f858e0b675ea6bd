"""A run's preprocessing contract (``data/contract.py``), resolved once, in one place.

Each of ``data.image_size``, ``resize_size``, ``interpolation``, ``mean`` and ``std`` comes from the
first of these that sets it:

1. the command line (``data.image_size=160``; a resumed run: the command that started it);
2. the experiment preset (``experiment=<name>``, its ``data:`` keys);
3. the starting run of a transfer chain (``model.weights=<run>``): the inputs its model was trained on;
4. the data config's own value (``conf/data/<name>.yaml``, e.g. synthetic's 32 px);
5. the weights' defaults (torchvision's weights transforms, timm's ``pretrained_cfg``).

Without a starting run, 3 is empty and 1, 2 and 4 are simply the composed ``data`` config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transfer_lightning.data.contract import OVERRIDABLE, Preprocessing, resolve_preprocessing
from transfer_lightning.models.lineage import RunWeights, preprocessing_from_run


def run_preprocessing(
    data: DictConfig, defaults: Preprocessing, starting_run: RunWeights | None, explicit: set[str]
) -> Preprocessing:
    """The contract of a run whose data config is ``data``; ``explicit``: the ``data.*`` keys set by the command
    line or the experiment preset (``explicit_data_keys``)."""
    if starting_run is None:
        return resolve_preprocessing(data, defaults)
    overrides = {key: data.get(key) for key in OVERRIDABLE if key in explicit}
    inherited = preprocessing_from_run(starting_run, overrides)
    if inherited.crop_size is not None:  # the starting run's images were stored natively (CIFAR): not a rule for files
        inherited = replace(inherited, resize_size=inherited.image_size, crop_size=None)
    return inherited


def explicit_data_keys(typed: list[str], experiment: DictConfig | dict[str, Any] | None) -> set[str]:
    """The preprocessing keys (``image_size`` ...) that ``typed`` overrides or the experiment preset set."""
    keys = {item.lstrip("+~").split("=", 1)[0].removeprefix("data.") for item in typed}
    preset = OmegaConf.to_container(experiment) if OmegaConf.is_config(experiment) else experiment or {}
    keys |= set((preset.get("data") or {}) if isinstance(preset, dict) else {})
    return keys & set(OVERRIDABLE)
