"""Config rules checked before any data is touched: one line naming key, value and what is allowed.

Hydra already refuses unknown keys and unknown group options (struct mode); these rules catch
values of the right key but the wrong kind. Add a rule = add one line to ``RULES``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.utils.choices import (
    ALL_BUT_LAST,
    ALL_STAGES,
    AUGMENTATIONS,
    BALANCE,
    CACHE,
    INTERPOLATIONS,
    LR_DECAY_UNITS,
    ON_BAD_FILE,
)
from transfer_lightning.utils.cli import CONFIG_FOLDER, check_top_level_keys, top_level_settings
from transfer_lightning.utils.errors import UserError

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


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low


def _epochs(value: Any) -> bool:
    """A non-decreasing list of epoch numbers (its length is the strategy's check: one per stage)."""
    return OmegaConf.is_list(value) and all(_is_int(v) and v >= 0 for v in value) and list(value) == sorted(value)


def _batches(value: Any) -> bool:
    """Lightning's limit_*_batches / overfit_batches: a count (int >= 0) or a fraction in [0, 1]."""
    return (_is_int(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda value: any(value == choice and type(value) is type(choice) for choice in choices)


def _three_numbers(least: float) -> Callable[[Any], bool]:
    return lambda v: OmegaConf.is_list(v) and len(v) == 3 and all(_is_number(x) and x >= least for x in v)


PRECISIONS = ("auto", "64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

RULES: tuple[Rule, ...] = (
    # top level
    Rule("seed", _is_int, "an integer", optional=False),
    Rule("test", _is_bool, "true or false"),
    Rule("ckpt_path", _optional(lambda v: isinstance(v, str) and v.endswith(".ckpt")), "a path to a .ckpt file, or null"),
    Rule("resume", lambda v: v is None or isinstance(v, (str, bool)), "a run folder (outputs/<date>/<time>), true for a sweep, or null"),
    # model
    Rule("model.name", lambda v: isinstance(v, str) and v != "", "a model name, e.g. resnet18 (model=<name>)",
         optional=False),
    Rule("model.weights", lambda v: v is None or isinstance(v, str),
         "DEFAULT, a torchvision weights name, pretrained (timm), a path to a .pth/.safetensors file, a run's .ckpt or folder, or null"),
    Rule("model.backbone", lambda v: isinstance(v, str) and v != "", "a Backbone class path (set by model=<name>)"),
    # strategy (the ranges that depend on the backbone's stage count: check_stage_counts)
    Rule("strategy.frozen_stages", lambda v: (_is_int(v) and v >= 0) or v in (ALL_STAGES, ALL_BUT_LAST),
         f"an integer 0..N (the backbone's stage count), {ALL_STAGES} or {ALL_BUT_LAST}"),
    Rule("strategy.lr_decay_unit", lambda v: v in LR_DECAY_UNITS, " | ".join(LR_DECAY_UNITS)),
    Rule("strategy.train_bn", _is_bool, "true or false"),
    Rule("strategy.lr_decay", lambda v: v is None or (_is_number(v) and 0 < v <= 1), "a number in (0, 1] or null"),
    Rule("strategy.unfrozen_bn", lambda v: v in ("train", "eval"), "train | eval"),
    Rule("strategy.head_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    Rule("strategy.unfreeze_every", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = all at once)"),
    Rule("strategy.min_frozen_stages", lambda v: _is_int(v) and v >= 0, "an integer in 0..N-1 (N: the backbone's stages)"),
    Rule("strategy.milestones", _optional(_epochs), "a non-decreasing list of epochs >= 0 (one per stage), or null"),
    Rule("strategy.unfreeze_warmup_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    # optimizer
    Rule("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0", optional=False),
    Rule("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("optimizer.momentum", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("optimizer.nesterov", _is_bool, "true or false"),
    # scheduler
    Rule("scheduler.warmup_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    Rule("scheduler.step_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("scheduler.gamma", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    Rule("scheduler.min_lr_ratio", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    Rule("scheduler.max_epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (set trainer.max_epochs)"),
    # data
    Rule("data.image_size", _optional(_int_at_least(32)), "an integer >= 32, or null (= the model's weights' size)"),
    Rule("data.resize_size", _optional(_int_at_least(32)), "an integer >= data.image_size, or null (= data.image_size)"),
    Rule("data.interpolation", lambda v: v is None or v in INTERPOLATIONS, " | ".join(INTERPOLATIONS) + " | null"),
    Rule("data.mean", _optional(_three_numbers(0)), "three numbers [R, G, B], or null (the model's)"),
    Rule("data.std", _optional(_three_numbers(1e-12)), "three numbers [R, G, B] > 0, or null (the model's)"),
    Rule("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.num_workers", lambda v: v == "auto" or (_is_int(v) and v >= 0), "auto or an integer >= 0"),
    Rule("data.augment", _one_of(*AUGMENTATIONS), " | ".join(AUGMENTATIONS)),
    Rule("data.color_jitter", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("data.feature_cache", lambda v: v == "auto" or v is False, "auto | false"),
    Rule("data.feature_cache_max_gb", lambda v: _is_number(v) and v > 0, "a number of GB > 0"),
    Rule("compile", lambda v: isinstance(v, bool), "true or false"),
    Rule("data.val_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.val_fraction", lambda v: _is_number(v) and 0 < v < 1, "a fraction in (0, 1)"),
    Rule("data.test_fraction", lambda v: v is None or (_is_number(v) and 0 < v < 1), "a fraction in (0, 1) or null"),
    Rule("data.root", lambda v: isinstance(v, str) and v.strip() != "", "a folder path, e.g. data.root=~/photos"),
    Rule("data.split_seed", _is_int, "an integer"),
    Rule("data.on_bad_file", _one_of(*ON_BAD_FILE), " | ".join(ON_BAD_FILE)),
    Rule("data.balance", _one_of(*BALANCE), " | ".join(BALANCE)),
    Rule("data.cache", _one_of(*CACHE), " | ".join(CACHE)),
    Rule("data.test_each_epoch", _is_bool, "true or false"),
    Rule("data.download", _is_bool, "true or false"),
    Rule("data.num_classes", _int_at_least(2), "an integer >= 2"),
    Rule("data.train_size", _int_at_least(1), "an integer >= 1"),
    Rule("data.test_size", _int_at_least(1), "an integer >= 1"),
    Rule("data.native_size", _int_at_least(1), "an integer >= 1"),
    Rule("data.seed", _is_int, "an integer"),
    # trainer
    Rule("trainer.max_epochs", lambda v: v is None or (_is_int(v) and (v >= 1 or v == -1)), "an integer >= 1 (or -1)"),
    Rule("trainer.min_epochs", _optional(_int_at_least(0)), "an integer >= 0, or null"),
    Rule("trainer.max_steps", _int_at_least(-1), "an integer >= 1 (or -1: no limit)"),
    Rule("trainer.min_steps", _optional(_int_at_least(0)), "an integer >= 0, or null"),
    Rule("trainer.max_time", lambda v: v is None or isinstance(v, (str, dict)) or OmegaConf.is_dict(v),
         "DD:HH:MM:SS, a dict of days/hours/minutes, or null"),
    Rule("trainer.accumulate_grad_batches", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    Rule("tune.lr_find", lambda v: isinstance(v, bool), "true or false"),
    Rule("tune.apply", lambda v: isinstance(v, bool), "true or false"),
    Rule("tune.min_lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    Rule("tune.max_lr", lambda v: _is_number(v) and v > 0, "a number > 0 (above tune.min_lr)"),
    Rule("tune.num_training", lambda v: _is_int(v) and v >= 20, "an integer >= 20 (the suggestion skips the first 10 steps)"),
    Rule("trainer.accelerator", lambda v: v in ACCELERATORS, " | ".join(ACCELERATORS)),
    Rule("trainer.devices", lambda v: v == "auto" or (_is_int(v) and (v >= 1 or v == -1)) or isinstance(v, str)
         or OmegaConf.is_list(v), "auto, a count >= 1, -1 (all), or a list of device indices"),
    Rule("trainer.num_nodes", _int_at_least(1), "an integer >= 1"),
    Rule("trainer.precision", lambda v: v in PRECISIONS or v in (16, 32, 64), " | ".join(PRECISIONS)),
    Rule("trainer.fast_dev_run", lambda v: _is_bool(v) or (_is_int(v) and v >= 0), "true, false or a batch count"),
    Rule("trainer.limit_train_batches", _optional(_batches), "a batch count >= 0, a fraction in [0, 1], or null"),
    Rule("trainer.limit_val_batches", _optional(_batches), "a batch count >= 0, a fraction in [0, 1], or null"),
    Rule("trainer.limit_test_batches", _optional(_batches), "a batch count >= 0, a fraction in [0, 1], or null"),
    Rule("trainer.limit_predict_batches", _optional(_batches), "a batch count >= 0, a fraction in [0, 1], or null"),
    Rule("trainer.overfit_batches", _batches, "a batch count >= 0 or a fraction in [0, 1]"),
    Rule("trainer.val_check_interval", _optional(lambda v: (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1)),
         "a batch count >= 1, a fraction of the epoch in (0, 1], or null"),
    Rule("trainer.check_val_every_n_epoch", _optional(_int_at_least(1)), "an integer >= 1, or null"),
    Rule("trainer.num_sanity_val_steps", _optional(_int_at_least(-1)), "an integer >= 0 (-1: all), or null"),
    Rule("trainer.log_every_n_steps", _optional(_int_at_least(1)), "an integer >= 1"),
    Rule("trainer.gradient_clip_val", _optional(lambda v: _is_number(v) and v >= 0), "a number >= 0, or null"),
    Rule("trainer.gradient_clip_algorithm", lambda v: v in (None, "norm", "value"), "norm | value | null"),
    Rule("trainer.deterministic", lambda v: v is None or _is_bool(v) or v == "warn", "true | false | warn | null"),
    Rule("trainer.benchmark", _optional(_is_bool), "true | false | null"),
    Rule("trainer.enable_checkpointing", _optional(_is_bool), "true | false | null"),
    Rule("trainer.enable_progress_bar", _optional(_is_bool), "true | false | null"),
    Rule("trainer.enable_model_summary", _optional(_is_bool), "true | false | null"),
    Rule("trainer.inference_mode", _is_bool, "true or false"),
    Rule("trainer.detect_anomaly", _is_bool, "true or false"),
    Rule("trainer.reload_dataloaders_every_n_epochs", _int_at_least(0), "an integer >= 0"),
    # callbacks
    Rule("callbacks.checkpoint.every_n_steps", _optional(_int_at_least(1)), "an integer >= 1, or null"),
    Rule("callbacks.model_checkpoint.save_top_k", _int_at_least(-1), "an integer >= 0 (-1: keep all)"),
    Rule("callbacks.model_checkpoint.mode", lambda v: v in ("min", "max"), "min | max"),
    Rule("callbacks.model_checkpoint.every_n_train_steps", _optional(_int_at_least(1)), "an integer >= 1, or null"),
    Rule("callbacks.early_stopping.patience", _int_at_least(0), "an integer >= 0"),
    Rule("callbacks.early_stopping.min_delta", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("callbacks.early_stopping.mode", lambda v: v in ("min", "max"), "min | max"),
    Rule("callbacks.lr_monitor.logging_interval", lambda v: v in (None, "epoch", "step"), "epoch | step | null"),
    Rule("callbacks.per_class_accuracy.stages", lambda v: OmegaConf.is_list(v) and set(v) <= {"val", "test"},
         "a list of val / test"),
    # logger and paths
    Rule("logger.default_hp_metric", _is_bool, "true or false"),
    Rule("logger.name", lambda v: isinstance(v, str) and v != "", "a folder name"),
    Rule("paths.root_dir", lambda v: isinstance(v, str) and v != "", "a folder path"),
    Rule("paths.data_dir", lambda v: isinstance(v, str) and v != "", "a folder path"),
)  # fmt: skip


def validate_training_config(cfg: DictConfig, config_dir: Path = CONFIG_FOLDER) -> None:
    """Every check of a training config, all before any data is read: the rules, the top-level keys,
    the arguments of built nodes, ``ckpt_path`` and the strategy's own checks (``strategy.milestones`` ...)."""
    check_before_torch(cfg, config_dir)
    validate_config(cfg)
    from transfer_lightning.classifier import instantiate_strategy  # its constructor checks its settings
    from transfer_lightning.models import backbone_class

    stage_names = backbone_class(cfg.model).stage_names_of(cfg.model.name)
    instantiate_strategy(OmegaConf.to_container(cfg.strategy, resolve=True), stage_names)


def check_before_torch(cfg: DictConfig, config_dir: Path = CONFIG_FOLDER) -> None:
    """The checks that need only the config (no torch, no model): the top-level keys, every value rule
    and ``ckpt_path``. The command line runs them within its first second (``utils/cli.py``); the
    checks that build classes (arguments of built nodes, stage counts) follow once torch is loaded."""
    check_top_level_keys(cfg, top_level_settings(config_dir))
    check_values(cfg)
    checkpoint = cfg.get("ckpt_path")
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        raise UserError(
            f"ckpt_path={checkpoint} does not exist; give the checkpoint of a run to continue "
            "(outputs/<date>/<time>/checkpoints/last.ckpt) or resume=<run folder>"
        )


def check_values(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise ``UserError`` for the first value that breaks a rule."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            if rule.optional:
                continue
            raise UserError(f"{rule.key} is missing from the config; allowed: {rule.allowed}")
        if not rule.check(value):
            raise UserError(f"{rule.key}={value!r} is not allowed; expected {rule.allowed}")


def validate_config(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise ``UserError`` for the first value that breaks a rule, a key its class does not take or a stage
    count out of the backbone's range."""
    check_values(cfg, rules)
    check_target_keys(cfg)
    check_stage_counts(cfg)


def check_stage_counts(cfg: DictConfig) -> None:
    """``model.name`` is one of its family's, and the strategy's stage counts fit its N stages."""
    model = cfg.get("model")
    if not model or not model.get("name"):
        return
    from transfer_lightning.models import backbone_class  # torch: after the checks of check_before_torch

    family = backbone_class(model)
    family.check_name(model.name)
    strategy = cfg.get("strategy") or {}
    frozen, minimum = strategy.get("frozen_stages"), strategy.get("min_frozen_stages")
    if not (_is_int(frozen) or _is_int(minimum)):
        return
    names = family.stage_names_of(model.name)
    if _is_int(frozen) and frozen > len(names):
        raise UserError(
            f"strategy.frozen_stages={frozen} is not allowed: out of range for {model.name}'s {len(names)} stages "
            f"({', '.join(names)}); allowed: 0..{len(names)}, {ALL_STAGES} or {ALL_BUT_LAST}"
        )
    if _is_int(minimum) and minimum >= len(names):
        raise UserError(
            f"strategy.min_frozen_stages={minimum} is not allowed: out of range for {model.name}'s {len(names)} stages "
            f"({', '.join(names)}); allowed: 0..{len(names) - 1}"
        )


_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
_BUILT_NODES = ("data", "strategy", "optimizer", "scheduler", "trainer", "logger")


def check_target_keys(cfg: DictConfig) -> None:
    """A key added with ``+group.key=value`` must be an argument of the class the node builds.

    Hydra refuses unknown keys in plain overrides; ``+`` adds them, and the class would fail with a
    TypeError (and a traceback) only when it is built.
    """
    nodes = [(name, cfg.get(name)) for name in _BUILT_NODES]
    nodes += [(f"callbacks.{name}", node) for name, node in (cfg.get("callbacks") or {}).items()]
    for path, node in nodes:
        if not OmegaConf.is_dict(node) or "_target_" not in node:
            continue
        accepted = _accepted_arguments(node["_target_"])
        if accepted is None:
            continue
        unknown = sorted(set(node.keys()) - accepted - _HYDRA_KEYS)
        if unknown:
            raise UserError(
                f"{path}.{unknown[0]} is not a setting of {node['_target_']}; allowed: {', '.join(sorted(accepted))}"
            )


def _accepted_arguments(target: str) -> set[str] | None:
    """The keyword arguments ``target`` takes (following ``**kwargs`` up the classes); None: anything."""
    try:
        obj = _locate(target)
    except ImportError as error:
        raise UserError(f"_target_ {target} cannot be imported ({error}); check the config") from error
    functions = [cls.__init__ for cls in obj.__mro__ if "__init__" in vars(cls)] if inspect.isclass(obj) else [obj]
    names: set[str] = set()
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None
