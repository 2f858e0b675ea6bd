"""The data config a checkpoint carries, and the data config ``evaluate`` rebuilds from it.

A run records its whole ``data`` config (module, root, layout and split settings, sizes) with
every folder made absolute, so ``evaluate ckpt_path=...`` serves exactly the run's splits from
any working directory; ``data.<key>=...`` on the command line replaces one part (a moved root).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transfer_lightning.utils.errors import UserError

FOLDER_KEYS = ("root", "cache_dir", "feature_cache_dir")


def recorded_data_config(data_cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``data_cfg`` as plain containers (``weights_only`` loads them), its folders absolute."""
    plain = OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else dict(data_cfg)
    for key in FOLDER_KEYS:
        if plain.get(key) is not None:
            plain[key] = str(Path(str(plain[key])).expanduser().absolute())
    return plain


def data_config_from_checkpoint(
    recorded: Mapping[str, Any] | None, typed: Mapping[str, Any], checkpoint: Path
) -> dict[str, Any]:
    """The checkpoint's data config with the ``data.*`` keys the user ``typed`` replacing their parts."""
    if not recorded:
        raise UserError(
            f"{checkpoint} records no data config (it predates data recording); name the data: "
            "data=image_folder data.root=<folder> (or data=cifar10, data=synthetic)"
        )
    unknown = sorted(set(typed) - set(recorded))
    if unknown:
        raise UserError(
            f"data.{unknown[0]} is not a setting of this checkpoint's data ({recorded.get('_target_')}); "
            f"its settings: {', '.join(sorted(key for key in recorded if not key.startswith('_')))}"
        )
    merged = {**recorded, **typed}
    return recorded_data_config(merged)
