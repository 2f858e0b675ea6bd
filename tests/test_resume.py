"""Resume: a run killed mid-epoch continues in its folder and ends exactly like an unbroken run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import CONFIG_DIR, ROOT, TINY, compose_config, run_cli
from tests.exit_after_epoch import EXIT_CODE
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.run.builders import record_of_config
from transfer_lightning.run.checkpoint import load_checkpoint_safely
from transfer_lightning.run.model_record import RECORD_KEY
from transfer_lightning.run.resume import ResumeRefused, check_checkpoint_fits, check_resume_command
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_torch_save

THREE_EPOCHS = [*TINY, "trainer.max_epochs=3", "strategy=finetune"]
SLOW = ["+callbacks.slow._target_=tests.fault_injection.SlowTrainingSteps", "+callbacks.slow.seconds=0.4"]
# exits (status EXIT_CODE) as the epoch after $EXIT_AFTER_EPOCH starts; unset, the same command never exits
EXIT_HOOK = "tests.exit_after_epoch.ExitAfterEpoch"
EXIT_AFTER_EPOCH = f"+callbacks.exit_after._target_={EXIT_HOOK}"
# the setups a resume must continue exactly: the default (layer4 trained on cached features), a live
# backbone under augmentation (no cache: the augmentation RNG is restored) with a cosine schedule, and
# recipe=timm: RandAugment (torch's RNG), mixup / CutMix (NumPy's), the EMA of the weights (its average and
# the raw weights in the checkpoint) and a schedule stepped per batch
RESUME_SETUPS = {
    "cached_features": [],
    "augmented_live_backbone_cosine": ["data.augment=standard", "scheduler=cosine"],
    "recipe_timm_ema_mixup_onecycle": ["recipe=timm", "scheduler=onecycle"],
}


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "transfer_lightning", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before writing {path}: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "setup",
    [
        # slow: the cached path's resume is also covered fast by test_sweeps' killed-sweep resume
        pytest.param("cached_features", marks=pytest.mark.slow),
        # slow: the recipe setup below resumes a live, augmented backbone and a schedule too
        pytest.param("augmented_live_backbone_cosine", marks=pytest.mark.slow),
        "recipe_timm_ema_mixup_onecycle",
    ],
)
def test_killed_run_resumes_in_its_folder_and_ends_bit_equal_to_an_unbroken_run(tmp_path, setup: str) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    # one command for all three runs (its exit hook reads $EXIT_AFTER_EPOCH); a data folder of their own
    command = [*THREE_EPOCHS, *RESUME_SETUPS[setup], EXIT_AFTER_EPOCH, f"paths.data_dir={tmp_path / 'data'}"]
    env = {"PYTHONPATH": str(ROOT)}
    reference = run_cli(*command, f"hydra.run.dir={reference_dir}", env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads((reference_dir / "run_summary.json").read_text())
    assert expected["feature_cache"]["enabled"] == (setup == "cached_features")

    # dies as epoch 2 starts, right after epoch 1 (index 0) wrote last.ckpt: no summary, no teardown
    killed = run_cli(*command, f"hydra.run.dir={killed_dir}", env={**env, "EXIT_AFTER_EPOCH": "0"})
    assert killed.returncode == EXIT_CODE, killed.stderr[-3000:]
    last = killed_dir / "checkpoints" / "last.ckpt"
    assert checkpoint(last)["epoch"] == 0 and not (killed_dir / "run_summary.json").exists()

    resumed = run_cli(f"resume={killed_dir}", f"trusted_classes=[{EXIT_HOOK}]", env=env)  # the test's own hook
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    got = json.loads((killed_dir / "run_summary.json").read_text())
    for key in ("epochs", "global_step", "best_val_acc", "test_acc", "test_per_class_acc"):
        assert got[key] == expected[key], key
    assert got["resumed_from"] == str(last.resolve())

    final_expected, final_got = checkpoint(reference_dir / "checkpoints" / "last.ckpt"), checkpoint(last)
    assert (final_got["epoch"], final_got["global_step"]) == (final_expected["epoch"], final_expected["global_step"])
    for name, tensor in final_expected["state_dict"].items():
        assert torch.equal(final_got["state_dict"][name], tensor), name  # bit-equal weights (the EMA's, with one)
    for name, tensor in final_expected.get("current_model_state", {}).items():
        assert torch.equal(final_got["current_model_state"][name], tensor), name  # and the raw weights beside it
    assert ("averaging_state" in final_got) == (setup == "recipe_timm_ema_mixup_onecycle")
    for expected_state, got_state in zip(
        final_expected["optimizer_states"][0]["state"].values(),
        final_got["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(got_state[k], v) for k, v in expected_state.items())
    early_key = next(k for k in final_expected["callbacks"] if k.startswith("EarlyStopping"))
    expected_early, got_early = final_expected["callbacks"][early_key], final_got["callbacks"][early_key]
    assert (got_early["wait_count"], got_early["best_score"]) == (
        expected_early["wait_count"],
        expected_early["best_score"],
    )
    best_key = next(k for k in final_expected["callbacks"] if k.startswith("RunCheckpoint"))
    assert (
        final_got["callbacks"][best_key]["best_model_score"]
        == final_expected["callbacks"][best_key]["best_model_score"]
    )

    # same folder: the original config kept, no last-v1.ckpt, one TensorBoard run appended to
    assert OmegaConf.load(killed_dir / ".hydra" / "config.yaml").trainer.max_epochs == 3
    assert list((killed_dir / ".hydra").glob("resumed-*/config.yaml"))
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not [p for p in (killed_dir / "tensorboard").iterdir() if p.is_dir()]
    assert len({p.name.split(".")[-2] for p in (killed_dir / "tensorboard").glob("events.out.tfevents.*")}) == 2


@pytest.mark.slow  # fast cover of resume: the bit-equal test above (augmented, live, cosine)
def test_run_killed_after_a_mid_epoch_step_checkpoint_resumes_from_that_step(tmp_path) -> None:
    # 64 images in batches of 16: 4 steps an epoch; a checkpoint every 2 steps; killed after step 6,
    # half way through epoch 2 (index 1)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    command = [
        *THREE_EPOCHS, "callbacks.checkpoint.every_n_steps=2", f"paths.data_dir={tmp_path / 'data'}",
        "+callbacks.exit_after._target_=tests.exit_after_epoch.ExitAfterStep",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT)}
    reference = run_cli(*command, f"hydra.run.dir={reference_dir}", env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = run_cli(*command, f"hydra.run.dir={killed_dir}", env={**env, "EXIT_AFTER_STEP": "6"})
    assert killed.returncode == EXIT_CODE, killed.stderr[-3000:]
    last = killed_dir / "checkpoints" / "last.ckpt"
    at_kill = checkpoint(last)
    assert (at_kill["epoch"], at_kill["global_step"]) == (1, 6), "the step checkpoint, mid-epoch"
    assert at_kill["optimizer_states"][0]["state"][0]["step"] == 6

    resumed = run_cli(f"resume={killed_dir}", "trusted_classes=[tests.exit_after_epoch.ExitAfterStep]", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((reference_dir / "run_summary.json").read_text())
    got = json.loads((killed_dir / "run_summary.json").read_text())
    assert got["resumed_from"] == str(last.resolve()) and got["status"] == "completed"
    # the rest of epoch 2 is its last 2 steps, not a replay of all 4 (docs/reliability.md: it sees other batches)
    assert (got["epochs"], got["global_step"]) == (expected["epochs"], expected["global_step"]) == (3, 12)
    final = checkpoint(last)
    assert (final["epoch"], final["global_step"]) == (2, 12)
    assert final["optimizer_states"][0]["state"][0]["step"] == 12
    frozen = [name for name in final["state_dict"] if not name.startswith(("net.layer4.", "net.fc."))]
    reference_state = checkpoint(reference_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert frozen and all(torch.equal(final["state_dict"][name], reference_state[name]) for name in frozen)


def _saved_run(folder: Path, *overrides: str) -> Path:
    """A run folder as training leaves it: ``.hydra/config.yaml`` (interpolations kept) and a last.ckpt."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    cfg = compose_config([*TINY, *overrides])
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    classes = [f"class_{index}" for index in range(cfg.data.num_classes)]
    record = record_of_config(cfg, classes, Preprocessing(cfg.data.image_size, cfg.data.image_size))
    torch.save({RECORD_KEY: record.to_dict({}, {})}, folder / "checkpoints" / "last.ckpt")  # its record, no weights
    return folder


def test_refused_resume_exits_2_in_one_line_and_leaves_the_run_folder_as_it_was(tmp_path) -> None:
    run = _saved_run(tmp_path / "run", "strategy=gradual")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = run_cli(f"resume={run}", "strategy.unfreeze_every=2", "trainer.max_epochs=4", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "strategy.unfreeze_every=2 would change" in result.stderr and "not in struct" not in result.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no .hydra/resumed-<time>/, no summary


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("strategy.unfreeze_every=2", "strategy.unfreeze_every=2 would change strategy.unfreeze_every (1 in that run)"),
        ("strategy.unfreze_every=2", "is not a setting of that run (did you mean strategy.unfreeze_every?)"),
        ("model=resnet34", "model=resnet34 would change model"),
        ("trainer.max_epochs=5", "trainer.max_epochs=5 cannot change that run's schedule"),
    ],
)
def test_resume_command_is_checked_against_the_runs_own_config(tmp_path, override: str, expected: str) -> None:
    run = _saved_run(tmp_path / "run", "strategy=gradual", "scheduler=cosine", "trainer.max_epochs=3")
    with pytest.raises(UserError) as raised:
        check_resume_command([f"resume={run}", override])
    message = str(raised.value)
    assert expected in message and "\n" not in message
    if override.startswith("trainer.max_epochs"):  # refused with its reason, never listed as allowed
        assert "may only change" not in message and "trainer.max_epochs=3" in message
    else:
        assert "a resumed run may only change trainer.max_epochs" in message


def test_resume_command_takes_the_allowed_overrides_and_leaves_sweeps_alone(tmp_path) -> None:
    cosine = _saved_run(tmp_path / "cosine", "scheduler=cosine", "trainer.max_epochs=3")
    check_resume_command([f"resume={cosine}", "trainer.max_epochs=3", "trainer.accelerator=cpu", "hydra.run.dir=x"])
    constant = _saved_run(tmp_path / "constant", "trainer.max_epochs=3")
    check_resume_command([f"resume={constant}", "trainer.max_epochs=5"])  # no schedule over the epochs
    check_resume_command(["-m", "resume=true", "optimizer.lr=1e-2,1e-3"])  # a sweep's resume: sweeps/resume.py


def test_checkpoint_of_another_schedule_length_is_refused_with_the_reason(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    cosine = {"_target_": "transfer_lightning.optim.schedulers.cosine_with_warmup", "_partial_": True}
    torch.save({"hyper_parameters": {**_hparams(4), "scheduler": {**cosine, "max_epochs": 3}}, "callbacks": {}}, path)
    with pytest.raises(ResumeRefused) as raised:
        check_checkpoint_fits(path, {**_hparams(4), "scheduler": {**cosine, "max_epochs": 5}}, [], None)
    message = str(raised.value)
    assert "schedule over 3 epochs" in message and "trainer.max_epochs=3" in message
    assert "may only change" not in message


def test_checkpoint_that_does_not_fit_is_refused_before_training_and_leaves_nothing(tmp_path) -> None:
    run = _saved_run(tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": _hparams(4, "resnet34"), "callbacks": {}}, last)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = run_cli(*TINY, f"ckpt_path={last}", f"paths.data_dir={tmp_path / 'data'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not match this config (model.name: checkpoint 'resnet34'" in result.stderr
    after = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "train.log")  # Hydra's log appends
    assert after == before  # no .hydra/resumed-<time>/, no "failed" run_summary.json


def _hparams(classes: int, name: str = "resnet18") -> dict:
    cfg = compose_config([*TINY, f"model={name}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {
        "model": plain["model"],
        "strategy": plain["strategy"],
        "optimizer": plain["optimizer"],
        "scheduler": None,
        "class_names": [f"class_{i}" for i in range(classes)],
        "preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
    }


@pytest.mark.parametrize(
    ("current", "named"),
    [(_hparams(3), "class_names"), (_hparams(4, "resnet34"), "model.name")],
)
def test_checkpoint_of_other_classes_or_model_is_refused_with_the_difference(tmp_path, current, named) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": _hparams(4), "callbacks": {}}, path)
    check_checkpoint_fits(path, _hparams(4), [], None)  # the same config fits
    with pytest.raises(UserError, match=named):
        check_checkpoint_fits(path, current, [], None)


def test_checkpoint_from_before_backbones_and_full_contracts_still_fits_its_own_config(tmp_path) -> None:
    """Older checkpoints recorded no ``model.backbone`` and only image size, mean and std: what they left
    implicit (the ResNet family, resize = image size, bilinear) is what the current config states."""
    current = _hparams(4)
    current["preprocessing"] = {"image_size": 32, "resize_size": 32, "interpolation": "bilinear", "crop_size": 32,
                                "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip
    old = _hparams(4)
    del old["model"]["backbone"]
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": old, "callbacks": {}}, path)
    check_checkpoint_fits(path, current, [], None)
    current["preprocessing"]["interpolation"] = "bicubic"
    with pytest.raises(UserError, match=r"preprocessing.interpolation: checkpoint 'bilinear', config 'bicubic'"):
        check_checkpoint_fits(path, current, [], None)
    current["preprocessing"]["interpolation"] = "bilinear"
    current["model"]["backbone"] = "transfer_lightning.models.convnext.ConvNeXt"
    with pytest.raises(UserError, match=r"model.backbone: checkpoint 'transfer_lightning.models.resnet.ResNet'"):
        check_checkpoint_fits(path, current, [], None)


def test_checkpoint_whose_early_stopping_state_would_be_dropped_is_refused(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    state = {"EarlyStopping{'monitor': 'val/acc', 'mode': 'max'}": {"wait_count": 1}}
    torch.save({"hyper_parameters": _hparams(4), "callbacks": state}, path)
    with pytest.raises(UserError, match="monitor, mode or save frequency"):
        check_checkpoint_fits(path, _hparams(4), ["EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"], None)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_needing_arbitrary_unpickling_is_refused_not_executed(tmp_path) -> None:
    payload = _RunsCode()
    payload.marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": payload}, path)
    with pytest.raises(UserError, match="refused, not executed"):
        load_checkpoint_safely(path)
    assert not payload.marker.exists()


KILL_DURING_WRITE = """
import os, signal, sys, torch
from transfer_lightning.utils.files import atomic_torch_save
real_save = torch.save
def save_then_die(obj, handle):
    real_save(obj, handle)
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the file is swapped in
torch.save = save_then_die
atomic_torch_save({"weights": torch.full((1000,), 2.0)}, __import__("pathlib").Path(sys.argv[1]))
"""


def test_kill_during_checkpoint_write_leaves_the_previous_file_whole(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"weights": torch.ones(1000)}, path)
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(path)], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert torch.equal(load_checkpoint_safely(path)["weights"], torch.ones(1000))
    assert len(list(tmp_path.iterdir())) == 2  # last.ckpt and the dead process's partial file
    atomic_torch_save({"weights": torch.zeros(1000)}, path)  # the next save clears the leftover
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_every_n_steps_key_sets_the_checkpoint_step_interval() -> None:
    cfg = compose_config(["callbacks.checkpoint.every_n_steps=7"])
    assert cfg.callbacks.model_checkpoint.every_n_train_steps == 7
    assert cfg.callbacks.model_checkpoint.enable_version_counter is False


def _compose_tool(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=[f"paths.root_dir={ROOT}", *overrides])


def test_lr_find_run_resumes_offline_and_its_checkpoint_evaluates_predicts_exports_offline(
    tmp_path, monkeypatch
) -> None:
    from torchvision.models import resnet18

    from transfer_lightning.evaluate import evaluate
    from transfer_lightning.export import export
    from transfer_lightning.models.weights import expected_weights_path
    from transfer_lightning.predict import predict

    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    weights = expected_weights_path("resnet18", "DEFAULT")  # torchvision's cache: no hash check on a cached file
    weights.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), weights)
    offline = {"TORCH_HOME": str(torch_home), "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    run = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("model.weights")]
    # batch size 2: 32 steps an epoch, enough for the finder's 20
    first = run_cli(
        *args, "model.weights=DEFAULT", "tune.lr_find=true", "tune.num_training=20", "data.batch_size=2",
        f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", env=offline,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    first_summary = json.loads((run / "run_summary.json").read_text())
    found = first_summary["lr_find"]
    assert found["applied"] and found["suggestion"] != found["lr_before"]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").optimizer.lr == found["suggestion"]  # the run's config

    weights.unlink()  # from here on, ImageNet weights could only come from the network
    resumed = run_cli(f"resume={run}", "trainer.max_epochs=2", env=offline)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["epochs"] == 2 and summary["lr_find"] == {"resumed": True, "lr": found["suggestion"]}
    assert summary["weights"] == first_summary["weights"]  # the lineage comes back with the checkpoint
    # the frozen stages the feature cache reads are the checkpoint's (not a random init): the first run's features
    assert summary["feature_cache"]["enabled"] and summary["feature_cache"]["misses"] == []
    last = load_checkpoint_safely(run / "checkpoints" / "last.ckpt")
    assert last["transfer_lightning"]["optimizer"]["lr"] == found["suggestion"]

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    best = run / "checkpoints" / "best.ckpt"
    tool = [f"ckpt_path={best}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"]
    evaluate(_compose_tool("evaluate", [*tool, "data=synthetic", f"output_dir={tmp_path / 'eval'}"]))
    assert (tmp_path / "eval" / "eval_report.json").is_file()
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(images / "red.png")
    rows = predict(_compose_tool("predict", [*tool, f"inputs={images}", f"output_dir={tmp_path / 'predict'}"]))
    assert len(rows) == 1 and not rows[0]["error"]
    contract = export(_compose_tool("export", [f"ckpt_path={best}", "format=torchscript", f"output_dir={tmp_path}"]))
    assert (tmp_path / contract["file"]).is_file()
    assert not weights.exists()
