"""A checkpoint, run folder or sweep folder someone else wrote is data: nothing in it is imported, built or
written outside the allowlist (config/trust.py), whichever entry point reads it.

Each crafted file names a class to build where a value belongs (``hyper_parameters.data.seed =
{_target_: pathlib.Path.write_text, ...}``), a foreign backbone, optimizer, scheduler, strategy or
data module, or (a run folder) a foreign callback or trainer. Every entry point refuses it in one
sentence naming the file, the key, the target and why, and the canary file the payload would write
is never created.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import CONFIG_DIR, ROOT, TINY, run_cli
from transfer_lightning.config.trust import UntrustedFile
from transfer_lightning.evaluate import evaluate
from transfer_lightning.export import export
from transfer_lightning.models.weights import ensure_weights_available
from transfer_lightning.predict import predict
from transfer_lightning.run.resume import check_resume_command, read_saved_config
from transfer_lightning.utils.errors import UserError

FORMAT_1 = ROOT / "tests" / "data" / "format1_test_resnet.ckpt"  # written by main at 18af43a (tests/data/README.md)
TINY_TIMM = ["model=timm", "model.name=test_resnet", "scheduler=cosine"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: a tiny timm network trained one epoch through the CLI."""
    folder = tmp_path_factory.mktemp("untrusted")
    run = folder / "run"
    result = run_cli(*TINY, *TINY_TIMM, f"hydra.run.dir={run}", f"paths.data_dir={folder / 'data'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def writes(canary: Path) -> dict[str, Any]:
    """What the issue's reproduction planted: ``Path(canary).write_text(...)`` through nested targets."""
    return {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(canary)]},
            "data": "planted"}  # fmt: skip


def truncates(canary: Path) -> dict[str, Any]:
    return {"_target_": "builtins.open", "file": str(canary), "mode": "w"}


def _set(record: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = record
    for name in parents:
        node = node[name]
    node[last] = value


# (dotted key in the record, what replaces its value); a function of the canary plants a payload
CRAFTED: list[tuple[str, Callable[[Path], Any] | str]] = [
    ("data.seed", writes),
    ("data", writes),
    ("strategy.lr_decay", truncates),
    ("optimizer.lr", writes),
    ("scheduler.warmup_epochs", writes),
    ("model.weights", writes),
    ("preprocessing.mean", truncates),
    ("lineage", writes),
    ("strategy_state", writes),
    ("class_names", lambda canary: [writes(canary), "b"]),
    ("model.backbone", "pathlib.Path"),
    ("strategy._target_", "pathlib.Path.write_text"),
    ("optimizer._target_", "os.system"),
    ("scheduler._target_", "pathlib.Path.touch"),
    ("data._target_", "builtins.open"),
]
IDS = [key if isinstance(value, str) else f"{key}=payload" for key, value in CRAFTED]


def _crafted_checkpoint(source: Path, folder: Path, key: str, value: Any, record_key: str) -> tuple[Path, Path]:
    canary = folder / "canary.txt"
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    record = checkpoint[record_key]
    planted = value(canary) if callable(value) else value
    if record_key == "hyper_parameters":  # format 1 kept the lineage and strategy state beside its hparams
        moved = {"lineage": "weights_lineage", "strategy_state": "freezing_strategy"}
        if key in moved:
            checkpoint[moved[key]] = planted
        else:
            _set(record, key, planted)
    else:
        _set(record, key, planted)
    path = folder / "run" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return path, canary


def _tools(path: Path, folder: Path) -> dict[str, Callable[[], Any]]:
    """Every entry point that reads a checkpoint, called as its command calls it."""
    image = folder / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 10)).save(image)

    def composed(name: str, *overrides: str):
        GlobalHydra.instance().clear()
        paths = [f"paths.root_dir={folder}", f"paths.output_dir={folder / 'out'}", f"paths.data_dir={folder / 'd'}"]
        device = [] if name == "export" else ["trainer.accelerator=cpu"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(name, overrides=[f"ckpt_path={path}", *device, *paths, *overrides])

    return {
        "evaluate": lambda: evaluate(composed("evaluate", f"output_dir={folder / 'out'}")),
        "predict": lambda: predict(composed("predict", f"inputs={image}", f"output_dir={folder / 'out'}")),
        "export": lambda: export(composed("export", "format=state_dict", f"output_dir={folder / 'out'}")),
        "model.weights": lambda: ensure_weights_available("test_resnet", str(path)),
        "model.weights=<run folder>": lambda: ensure_weights_available("test_resnet", str(path.parent.parent)),
    }


def _refused_in_one_sentence(call: Callable[[], Any], path: Path, key: str) -> str:
    with pytest.raises(UserError) as refused:
        call()
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and key.split(".")[0] in message, message
    return message


@pytest.mark.parametrize(("key", "value"), CRAFTED, ids=IDS)
def test_a_crafted_checkpoint_is_refused_by_every_tool_and_writes_nothing(tiny_run, tmp_path, key, value) -> None:
    path, canary = _crafted_checkpoint(
        tiny_run / "checkpoints" / "best.ckpt", tmp_path, key, value, "transfer_lightning"
    )
    for tool, call in _tools(path, tmp_path).items():
        message = _refused_in_one_sentence(call, path, f"transfer_lightning.{key}")
        assert not canary.exists(), tool
        if isinstance(value, str):  # a foreign class: the sentence names it and says why
            assert repr(value) in message and "which is not" in message and "nothing was imported" in message, message
    assert not (tmp_path / "out").exists()  # refused before any output was written


@pytest.mark.parametrize(("key", "value"), [CRAFTED[0], CRAFTED[3], CRAFTED[7], CRAFTED[10]], ids=IDS[:1] + IDS[3:4]
                         + IDS[7:8] + IDS[10:11])  # fmt: skip
def test_a_crafted_checkpoint_of_the_old_format_is_refused_naming_its_own_key(tmp_path, key, value) -> None:
    path, canary = _crafted_checkpoint(FORMAT_1, tmp_path, key, value, "hyper_parameters")
    expected = {"lineage": "weights_lineage"}.get(key, f"hyper_parameters.{key}")
    for call in _tools(path, tmp_path).values():
        message = _refused_in_one_sentence(call, path, expected)
        assert expected in message and not canary.exists(), message


def test_the_issues_reproduction_is_refused_through_the_command_line_with_exit_status_2(tiny_run, tmp_path) -> None:
    path, canary = _crafted_checkpoint(
        tiny_run / "checkpoints" / "best.ckpt", tmp_path, "data.seed", writes, "transfer_lightning"
    )
    for module in ("transfer_lightning.evaluate", "transfer_lightning.export"):
        device = ["trainer.accelerator=cpu"] if module.endswith("evaluate") else []
        result = run_cli(f"ckpt_path={path}", *device, module=module, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert lines[0] == (
            f"Error: {path} is refused: transfer_lightning.data.seed names 'pathlib.Path.write_text' as a class to "
            "build, but transfer_lightning.data.seed holds a plain value, never a class (a file is data); nothing "
            "was imported, created or written"
        )
    result = run_cli(*TINY, *TINY_TIMM, f"model.weights={path}", f"hydra.run.dir={tmp_path / 'chain'}",
                     f"paths.data_dir={tmp_path / 'd'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "is refused: transfer_lightning.data.seed" in result.stderr, result.stderr[-2000:]
    assert not canary.exists()


# -- run folders: resume=<run folder> reads its .hydra/config.yaml and checkpoints/last.ckpt ----------------
RUN_CONFIG_CRAFTED = [
    ("callbacks.device_report._target_", "pathlib.Path.touch", "a callback this project configures"),
    ("trainer._target_", "builtins.exec", "Lightning's Trainer"),
    ("strategy._target_", "pathlib.Path.write_text", "a freezing strategy of transfer_lightning"),
    ("data.seed", "PAYLOAD", "holds a plain value, never a class"),
    ("optimizer.lr", "PAYLOAD", "holds a plain value, never a class"),
    ("data.feature_cache_dir", "${oc.env:HOME}", "calls the resolver 'oc.env'"),
]


def _crafted_run_folder(run: Path, folder: Path, key: str, value: Any) -> tuple[Path, Path]:
    canary = folder / "canary.txt"
    copy = folder / "copied-run"
    shutil.copytree(run, copy)
    config = copy / ".hydra" / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    _set(saved, key, writes(canary) if value == "PAYLOAD" else value)
    config.write_text(yaml.safe_dump(saved))
    return copy, canary


@pytest.mark.parametrize(("key", "value", "why"), RUN_CONFIG_CRAFTED, ids=[case[0] for case in RUN_CONFIG_CRAFTED])
def test_a_run_folder_whose_saved_config_names_a_foreign_class_is_refused_on_resume(tiny_run, tmp_path, key, value,
                                                                                  why) -> None:  # fmt: skip
    copy, canary = _crafted_run_folder(tiny_run, tmp_path, key, value)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    with pytest.raises(UntrustedFile) as refused:
        check_resume_command([f"resume={copy}", "trainer.accelerator=cpu"])
    message = str(refused.value)
    assert message.startswith(f"{copy / '.hydra' / 'config.yaml'} is refused: config.{key}") and why in message
    assert not canary.exists() and sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_a_crafted_run_folder_is_refused_by_the_command_line_before_anything_is_written(tiny_run, tmp_path) -> None:
    copy, canary = _crafted_run_folder(tiny_run, tmp_path, "callbacks.device_report._target_", "pathlib.Path.touch")
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    result = run_cli(f"resume={copy}", "trainer.accelerator=cpu", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "config.callbacks.device_report._target_ names 'pathlib.Path.touch'" in result.stderr
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before and not canary.exists()


def test_a_run_folders_last_checkpoint_with_a_planted_class_is_refused_on_resume(tiny_run, tmp_path) -> None:
    copy = tmp_path / "copied-run"
    shutil.copytree(tiny_run, copy)
    canary = tmp_path / "canary.txt"
    last = copy / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint["transfer_lightning"]["strategy"]["lr_decay"] = writes(canary)
    torch.save(checkpoint, last)
    with pytest.raises(UntrustedFile, match=r"transfer_lightning.strategy.lr_decay names 'pathlib.Path.write_text'"):
        check_resume_command([f"resume={copy}"])
    assert not canary.exists()


def test_the_saved_config_of_a_real_run_is_trusted_as_data_and_reads(tiny_run) -> None:
    saved = read_saved_config(tiny_run / ".hydra" / "config.yaml")
    assert saved.model.name == "test_resnet"
    check_resume_command([f"resume={tiny_run}", "trainer.accelerator=cpu"])  # a sound run folder resumes


def test_a_run_folder_that_would_write_outside_itself_is_refused(tiny_run, tmp_path) -> None:
    copy, _ = _crafted_run_folder(tiny_run, tmp_path, "callbacks.model_checkpoint.dirpath", str(tmp_path / "elsewhere"))
    GlobalHydra.instance().clear()
    from transfer_lightning.run.resume import check_saved_config

    saved = read_saved_config(copy / ".hydra" / "config.yaml")
    saved.paths.root_dir = saved.paths.output_dir = str(copy)
    with pytest.raises(UserError, match=r"callbacks.model_checkpoint.dirpath=.*elsewhere would write outside the run"):
        check_saved_config(saved, "the run folder")
    assert not (tmp_path / "elsewhere").exists()
