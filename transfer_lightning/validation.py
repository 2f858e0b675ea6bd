"""Config rules checked before any data is touched: one line naming key, value and what is allowed.

Hydra already refuses unknown keys and unknown group options (struct mode); these rules catch
values of the right key but the wrong kind. Add a rule = add one line to ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transfer_lightning.errors import UserError
from transfer_lightning.models import ARCHITECTURES

_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    check: Callable[[Any], bool]
    allowed: str
    optional: bool = True  # a missing key is fine (e.g. a data module without it)


RULES: tuple[Rule, ...] = (
    Rule("seed", _is_int, "an integer", optional=False),
    Rule("model.name", lambda v: v in ARCHITECTURES, " | ".join(ARCHITECTURES), optional=False),
    Rule("model.weights", lambda v: v is None or isinstance(v, str),
         "DEFAULT, a torchvision weights name, a path to a .pth file, or null"),
    Rule("strategy.frozen_stages", lambda v: _is_int(v) and 0 <= v <= 5, "an integer in 0..5"),
    Rule("strategy.train_bn", lambda v: isinstance(v, bool), "true or false"),
    Rule("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0", optional=False),
    Rule("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("optimizer.momentum", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("scheduler.warmup_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    Rule("scheduler.step_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("scheduler.gamma", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    Rule("data.image_size", lambda v: _is_int(v) and v >= 32, "an integer >= 32 (224 for pretrained ResNets)"),
    Rule("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.num_workers", lambda v: v == "auto" or (_is_int(v) and v >= 0), "auto or an integer >= 0"),
    Rule("data.augment", lambda v: v in ("none", "standard"), "none | standard"),
    Rule("data.color_jitter", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("data.feature_cache", lambda v: v == "auto" or v is False, "auto | false"),
    Rule("data.feature_cache_max_gb", lambda v: _is_number(v) and v > 0, "a number of GB > 0"),
    Rule("compile", lambda v: isinstance(v, bool), "true or false"),
    Rule("data.val_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.val_fraction", lambda v: _is_number(v) and 0 < v < 1, "a fraction in (0, 1)"),
    Rule("data.test_fraction", lambda v: v is None or (_is_number(v) and 0 < v < 1), "a fraction in (0, 1) or null"),
    Rule("trainer.max_epochs", lambda v: v is None or (_is_int(v) and (v >= 1 or v == -1)), "an integer >= 1 (or -1)"),
    Rule("trainer.accumulate_grad_batches", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
)  # fmt: skip


def validate_config(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise ``UserError`` for the first value that breaks a rule."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            if rule.optional:
                continue
            raise UserError(f"{rule.key} is missing from the config; allowed: {rule.allowed}")
        if not rule.check(value):
            raise UserError(f"{rule.key}={value!r} is not allowed; expected {rule.allowed}")
