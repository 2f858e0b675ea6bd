"""Every setting the schemas constrain refuses a bad value with one line: the key, the value and what is allowed."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest
from omegaconf import DictConfig, OmegaConf

from tests.conftest import TINY, compose_config, run_cli
from transfer_lightning.config.compose import compose_checked
from transfer_lightning.train import check_training_config
from transfer_lightning.utils.cli import CONFIG_FOLDER, top_level_settings
from transfer_lightning.utils.errors import UserError

# One bad value per constrained setting, as typed on the command line (wrong type or out of range); the
# test below fails if a setting the schemas constrain has none.
BAD_VALUES = {
    "seed": "forty-two",
    "test": "sometimes",
    "ckpt_path": "weights.pth",
    "resume": "3",
    "compile": "sometimes",
    "model.name": "''",
    "model.backbone": "''",
    "strategy.frozen_stages": "most",
    "strategy.lr_decay_unit": "layer",
    "strategy.train_bn": "maybe",
    "strategy.lr_decay": "1.5",
    "strategy.unfrozen_bn": "freeze",
    "strategy.head_epochs": "-1",
    "strategy.unfreeze_every": "-1",
    "strategy.min_frozen_stages": "-1",
    "strategy.milestones": "[3,1]",
    "strategy.unfreeze_warmup_epochs": "1.5",
    "optimizer.lr": "0",
    "optimizer.weight_decay": "-0.1",
    "optimizer.betas": "[0.9]",
    "optimizer.eps": "0",
    "optimizer.amsgrad": "maybe",
    "optimizer.momentum": "1.0",
    "optimizer.nesterov": "sure",
    "optimizer.dampening": "2.0",
    "scheduler.warmup_epochs": "-1",
    "scheduler.step_size": "0",
    "scheduler.gamma": "1.5",
    "scheduler.min_lr_ratio": "2.0",
    "scheduler.max_epochs": "0",
    "data.image_size": "16",
    "data.batch_size": "0",
    "data.resize_size": "8",
    "data.interpolation": "nearest",
    "data.mean": "[0.5,0.5]",
    "data.std": "[0.2,0,0.2]",
    "data.num_workers": "-2",
    "data.augment": "heavy",
    "data.color_jitter": "1.0",
    "data.val_size": "0",
    "data.val_fraction": "1.0",
    "data.test_fraction": "0.0",
    "data.test_each_epoch": "sometimes",
    "data.root": "''",
    "data.download": "maybe",
    "data.split_seed": "1.5",
    "data.num_classes": "1",
    "data.train_size": "0",
    "data.val_size@synthetic": "0",
    "data.test_size": "0",
    "data.native_size": "0",
    "data.seed": "x",
    "data.feature_cache": "always",
    "data.feature_cache_dir": "''",
    "data.feature_cache_max_gb": "0",
    "data.on_bad_file": "ignore",
    "data.balance": "oversample",
    "data.cache": "ram",
    "data.cache_dir": "''",
    "trainer.max_epochs": "0",
    "trainer.min_epochs": "-1",
    "trainer.max_steps": "-2",
    "trainer.min_steps": "-1",
    "trainer.max_time": "5",
    "trainer.accumulate_grad_batches": "0",
    "trainer.accelerator": "quantum",
    "trainer.devices": "0",
    "trainer.num_nodes": "0",
    "trainer.precision": "8-bit",
    "trainer.fast_dev_run": "-1",
    "trainer.limit_train_batches": "1.5",
    "trainer.limit_val_batches": "-1",
    "trainer.limit_test_batches": "all",
    "trainer.limit_predict_batches": "2.0",
    "trainer.overfit_batches": "-1",
    "trainer.val_check_interval": "0",
    "trainer.check_val_every_n_epoch": "0",
    "trainer.num_sanity_val_steps": "-2",
    "trainer.log_every_n_steps": "0",
    "trainer.gradient_clip_val": "-1.0",
    "trainer.gradient_clip_algorithm": "clip",
    "trainer.deterministic": "always",
    "trainer.benchmark": "fast",
    "trainer.enable_checkpointing": "on-and-off",
    "trainer.enable_progress_bar": "often",
    "trainer.enable_model_summary": "off-and-on",
    "trainer.inference_mode": "null",
    "trainer.use_distributed_sampler": "maybe",
    "trainer.detect_anomaly": "maybe",
    "trainer.barebones": "maybe",
    "trainer.sync_batchnorm": "maybe",
    "trainer.reload_dataloaders_every_n_epochs": "-1",
    "trainer.enable_autolog_hparams": "maybe",
    "callbacks.model_checkpoint.save_top_k": "-2",
    "callbacks.model_checkpoint.mode": "best",
    "callbacks.model_checkpoint.every_n_train_steps": "0",
    "callbacks.model_checkpoint.save_last": "maybe",
    "callbacks.model_checkpoint.auto_insert_metric_name": "maybe",
    "callbacks.model_checkpoint.enable_version_counter": "maybe",
    "callbacks.checkpoint.every_n_steps": "0",
    "callbacks.early_stopping.patience": "-1",
    "callbacks.early_stopping.min_delta": "-0.5",
    "callbacks.early_stopping.mode": "up",
    "callbacks.lr_monitor.logging_interval": "batch",
    "callbacks.per_class_accuracy.stages": "[train]",
    "callbacks.confusion_matrix.stages": "[train]",
    "callbacks.prediction_grid.size": "0",
    "logger.tensorboard.default_hp_metric": "sometimes",
    "logger.tensorboard.name": "''",
    "logger.csv.name": "''",
    "logger.mlflow.tracking_uri": "''",
    "logger.mlflow.experiment_name": "''",
    "logger.mlflow.log_model": "sometimes",
    "logger.wandb.project": "''",
    "logger.wandb.offline": "maybe",
    "logger.wandb.log_model": "maybe",
    "paths.root_dir": "''",
    "paths.data_dir": "''",
    "tune.lr_find": "sometimes",
    "tune.apply": "sure",
    "tune.min_lr": "0",
    "tune.max_lr": "-1.0",
    "tune.num_training": "10",
    "trusted_classes": "['']",
    "model.head_init": "''",
    "data.train_crop": "center",
    "data.crop_scale": "[0.08,1.5]",
    "data.randaugment_ops": "0",
    "data.randaugment_magnitude": "30",
    "data.augmix_severity": "10",
    "data.augmix_width": "0",
    "data.aug_transforms_mult": "0",
    "data.mixup_alpha": "-0.2",
    "data.cutmix_alpha": "-1.0",
    "data.mixup_prob": "1.5",
    "data.mixup_switch_prob": "-0.5",
    "data.mixup_mode": "mix",
    "data.sampler": "oversample",
    "loss.label_smoothing": "1.0",
    "loss.class_weights": "inverse",
    "ema.enabled": "maybe",
    "ema.decay": "1.0",
    "ema.warmup": "maybe",
    "scheduler.warmup_steps": "-1",
}
EVERY_LOGGER = "logger=[tensorboard,csv,mlflow,wandb]"
# the option whose node has the key (SGD has momentum, Adam has not); "key@option" for a key of several options
OPTIONS = [
    "optimizer=sgd",
    "scheduler=cosine",
    "scheduler=step",
    "data=image_folder",
    "data=synthetic",
    "strategy=gradual",
    EVERY_LOGGER,
]
IMAGE_FOLDER = "data=image_folder data.root=/x"
OPTION_FOR = {"optimizer.momentum": "optimizer=sgd", "optimizer.nesterov": "optimizer=sgd",
              "optimizer.dampening": "optimizer=sgd",
              "scheduler.step_size": "scheduler=step", "scheduler.gamma": "scheduler=step",
              "scheduler.warmup_epochs": "scheduler=cosine", "scheduler.min_lr_ratio": "scheduler=cosine",
              "scheduler.max_epochs": "scheduler=cosine", "scheduler.warmup_steps": "scheduler=cosine", "data.val_fraction": IMAGE_FOLDER,
              "data.test_fraction": IMAGE_FOLDER, "data.on_bad_file": IMAGE_FOLDER,
              "data.balance": IMAGE_FOLDER, "data.cache": IMAGE_FOLDER, "data.cache_dir": IMAGE_FOLDER, "data.num_classes": "data=synthetic",
              "data.train_size": "data=synthetic", "data.val_size@synthetic": "data=synthetic",
              "data.test_size": "data=synthetic", "data.native_size": "data=synthetic", "data.seed": "data=synthetic",
              "strategy.head_epochs": "strategy=gradual", "strategy.unfreeze_every": "strategy=gradual",
              "strategy.min_frozen_stages": "strategy=gradual", "strategy.milestones": "strategy=gradual",
              "strategy.unfreeze_warmup_epochs": "strategy=gradual", "logger.csv.name": EVERY_LOGGER,
              "logger.mlflow.tracking_uri": EVERY_LOGGER, "logger.mlflow.experiment_name": EVERY_LOGGER,
              "logger.mlflow.log_model": EVERY_LOGGER, "logger.wandb.project": EVERY_LOGGER,
              "logger.wandb.offline": EVERY_LOGGER, "logger.wandb.log_model": EVERY_LOGGER}  # fmt: skip
BASE = ["data=cifar10", "model.weights=null"]


def _constrained_keys(cfg, path: str = "") -> set[str]:
    """The dotted keys of every setting whose schema says what it allows."""
    schema = OmegaConf.get_type(cfg)
    keys = set()
    for field in fields(schema) if is_dataclass(schema) else []:
        if field.name.startswith("_"):
            continue
        if field.metadata.get("allowed") is not None or field.type in (bool, bool | None):
            keys.add(f"{path}{field.name}")
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            keys |= _constrained_keys(node, f"{path}{key}.")
    return keys


def test_every_constrained_setting_has_a_bad_value_in_the_table() -> None:
    keys = _constrained_keys(compose_config(BASE))
    for option in OPTIONS:
        keys |= _constrained_keys(compose_config([*BASE, option]))
    assert keys == {key.split("@")[0] for key in BAD_VALUES}, keys ^ {key.split("@")[0] for key in BAD_VALUES}


@pytest.mark.parametrize("data", ["synthetic", "cifar10"])
def test_default_configs_pass_every_check(data: str) -> None:
    check_training_config(compose_config([*TINY, f"data={data}"]))


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_setting_refuses_its_bad_value_naming_key_value_and_allowed(key: str) -> None:
    name = key.split("@")[0]
    overrides = [*BASE, *OPTION_FOR.get(key, "").split(), f"{name}={BAD_VALUES[key]}"]
    with pytest.raises(UserError) as raised:
        compose_checked(CONFIG_FOLDER, "config", overrides)
    message = str(raised.value)
    assert message.startswith(f"{name}=") and "is not allowed; expected " in message and "\n" not in message, message


def test_key_added_with_plus_that_the_class_does_not_take_is_refused() -> None:
    cfg = compose_config([*TINY, "+optimizer.learning_rate=0.1"])
    with pytest.raises(UserError, match=r"optimizer.learning_rate is not a setting of torch.optim.Adam; allowed: .*lr"):
        check_training_config(cfg)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=fast", "optimizer.lr='fast' is not allowed; expected a number > 0"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed; expected an integer >= 1"),
        ("+optimizer.learning_rate=0.1", "optimizer.learning_rate is not a setting of torch.optim.Adam"),
        ("+seeed=3", "+seeed=3 adds a key that is not a setting of this project; did you mean seed=3?"),
        ("strategy=gradual strategy.milestones=[1,3]", "strategy.milestones=[1, 3] is not allowed; give 5"),
    ],
)
def test_cli_refuses_bad_value_in_one_line_with_exit_2_before_data(override, expected, tmp_path) -> None:
    result = run_cli(
        *TINY, "data=cifar10", f"data.root={tmp_path / 'no-data'}", f"hydra.run.dir={tmp_path}", *override.split()
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: ") and expected in last_line and "Traceback" not in result.stderr
    assert not (tmp_path / "no-data").exists()  # refused before the data was touched


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+seeed=3"], "+seeed=3 adds a key that is not a setting of this project; did you mean seed=3?"),
        (["+strategyy=finetune"], "did you mean strategy=finetune?"),
        (["strategy=gradual", "strategy.milestones=[1,3]"], "strategy.milestones=[1, 3] is not allowed"),
        (["strategy=gradual", "strategy.min_frozen_stages=3", "strategy.milestones=[3,1]"], "non-decreasing"),
        (
            ["ckpt_path=/no/such/run/checkpoints/last.ckpt"],
            "ckpt_path=/no/such/run/checkpoints/last.ckpt does not exist",
        ),
    ],
)
def test_training_config_checks_run_before_data_in_one_sentence(overrides: list[str], expected: str) -> None:
    cfg = compose_config([*TINY, *overrides])
    with pytest.raises(UserError) as raised:
        check_training_config(cfg)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+seeed=3"], "+seeed=3 adds a key that is not a setting of this project; did you mean seed=3?"),
        (["+strategyy=finetune"], "did you mean strategy=finetune?"),
        (["strategy=gradual", "strategy.milestones=[3,1]"], "strategy.milestones=[3, 1] is not allowed"),
        (["ckpt_path=/no/such/run/last.ckpt"], "ckpt_path=/no/such/run/last.ckpt does not exist"),
        (["optimizer.lr=fast"], "optimizer.lr='fast' is not allowed; expected a number > 0"),
    ],
)
def test_the_command_line_refuses_config_mistakes_before_torch_loads(tmp_path, overrides, expected) -> None:
    """The first second: these checks need only the composed config, so the command refuses them before
    torch (and Lightning) are imported, writing nothing (Python's own import log shows what loaded)."""
    result = run_cli(*overrides, env={"PYTHONPROFILEIMPORTTIME": "1"}, cwd=tmp_path)
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(said) == 1 and said[0].startswith("Error: ") and expected in said[0]
    assert "omegaconf" in imported and not imported & {"torch", "lightning", "torchvision", "timm"}
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/


def test_top_level_settings_are_read_from_the_config_folder_and_the_defaults_pass() -> None:
    known = top_level_settings(CONFIG_FOLDER)
    assert {"seed", "ckpt_path", "resume", "tune", "compile", "strategy", "data", "trainer"} <= known
    assert "hydra" not in known and "defaults" not in known
    check_training_config(compose_config([*TINY, "strategy=gradual", "scheduler=cosine"]))


def test_command_line_refuses_a_misspelt_top_level_key_before_hydra_composes() -> None:
    from transfer_lightning.utils.cli import check_command_line

    with pytest.raises(UserError, match=r"^\+strategyy=finetune adds a key .*did you mean strategy=finetune\?"):
        check_command_line(["+strategyy=finetune", "data=synthetic"])
    with pytest.raises(UserError, match=r"did you mean seed=3\?"):
        check_command_line(["++seeed=3"])
    with pytest.raises(UserError, match=r"optimizer.learning_rate is not a setting of torch.optim.Adam"):
        check_command_line(["+optimizer.learning_rate=0.1", "experiment=fastai_style", "seed=3,4", "-m"])
    with pytest.raises(UserError, match=r"^\+experiment=fastai_style adds experiment, which the config already has"):
        check_command_line(["+experiment=fastai_style", "seed=3", "-m"])


def test_a_sweep_over_a_settings_values_is_checked_with_one_composition(monkeypatch) -> None:
    """Each swept value is set on the first job's config and checked by its schema's type; a config group
    swept, or a value of the wrong type, is composed (the composition's sentence names the mistake)."""
    from transfer_lightning.config import compose
    from transfer_lightning.utils.cli import check_command_line

    composed: list[list[str]] = []
    real_compose = compose._compose

    def counting(config_dir, name, overrides):
        composed.append(overrides)
        return real_compose(config_dir, name, overrides)

    monkeypatch.setattr(compose, "_compose", counting)
    check_command_line(["-m", "data=synthetic", "optimizer.lr=1e-3,3e-3,1e-2", "seed=1,2,3"])
    assert len(composed) == 1
    composed.clear()
    check_command_line(["-m", "data=synthetic", "optimizer=sgd,adam", "seed=1,2"])
    assert len(composed) == 2  # optimizer=adam swaps a whole node: composed
    with pytest.raises(UserError, match=r"^trainer.max_epochs='x' is not allowed; expected an integer >= 1"):
        check_command_line(["-m", "data=synthetic", "trainer.max_epochs=1,x"])
    with pytest.raises(UserError, match=r"^ckpt_path=/nowhere/last.ckpt does not exist"):
        check_command_line(["-m", "data=synthetic", "ckpt_path=null,/nowhere/last.ckpt"])
