"""Shared fixtures: the real config composed and shrunk, and the real CLI in a subprocess."""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import transfer_lightning.config  # noqa: F401 - registers the config schemas the YAMLs name
from transfer_lightning.utils.config_folder import config_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(config_folder())

# A tiny, fast, offline run: synthetic data, random init, CPU, no progress bar.
TINY = [
    "data=synthetic",
    "model.weights=null",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def compose_config(
    overrides: list[str] | None = None, return_hydra_config: bool = False, output_dir: str = "/tmp/tl-compose"
):
    """The real config, composed as the CLI would (without running it); the caller's own copy.

    ``paths.*`` point at the project root and ``output_dir`` since no Hydra run sets them.
    """
    overrides = (f"paths.root_dir={ROOT}", f"paths.output_dir={output_dir}", *(overrides or []))
    GlobalHydra.instance().clear()  # the same global state whether the composition below is cached or not
    return copy.deepcopy(_composed(overrides, return_hydra_config))


@functools.lru_cache(maxsize=32)
def _composed(overrides: tuple[str, ...], return_hydra_config: bool):
    """Composing takes most of a small test's time; the config files do not change during a run."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def run_cli(
    *args: str, module: str = "transfer_lightning", timeout: int = 300, env: dict | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` as a user would; returns the finished process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR") if full_env["HYDRA_FULL_ERROR"] == "0" else None
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def predict_class_folders(checkpoint: Path, files: list[Path], tmp_path: Path) -> list[dict[str, str]]:
    """``files`` copied into class folders under ``tmp_path/val_copy``, run through the real predict CLI;
    the rows of its ``predictions.csv``."""
    inputs = tmp_path / "val_copy"
    for path in files:
        (inputs / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, inputs / path.parent.name / path.name)
    predicted = run_cli(
        f"ckpt_path={checkpoint}", f"inputs={inputs}", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'pred'}",
        module="transfer_lightning.predict", cwd=tmp_path,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    return list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))


# Caches that Python and the tools keep beside the code; everything else in the tree is the project's.
_TOOL_CACHES = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mutmut-cache", "mutants"}


def project_tree_state(root: Path = ROOT) -> dict[str, tuple[int, int]]:
    """Every file of the working tree, ignored ones included, as ``{path: (size, mtime_ns)}``."""
    state = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _TOOL_CACHES]
        for name in files:
            path = Path(folder) / name
            stat = path.lstat()
            state[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.fixture(scope="session", autouse=True)
def tests_leave_the_working_tree_unchanged():
    """Fails the session if a test wrote into the repository (a feature cache, outputs/, lightning_logs/).

    Every test must write under its own ``tmp_path``: pass ``paths.data_dir`` and ``hydra.run.dir``
    (or ``default_root_dir`` to a bare Trainer).
    """
    if "mutmut" in sys.modules:  # mutmut's own files change under its copy of the tree while it runs
        yield
        return
    before = project_tree_state()
    yield
    after = project_tree_state()
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    assert not changed, f"tests changed the working tree (write under tmp_path instead): {changed[:20]}"


@pytest.fixture
def tiny_run_args(tmp_path: Path) -> list[str]:
    """CLI overrides for a tiny run whose folder is ``tmp_path / "run"``."""
    return [*TINY, f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run trained through the real CLI, shared by the evaluate/predict/export tests.

    Its folder holds ``checkpoints/best.ckpt`` and the TensorBoard events of the run. The model
    learns the synthetic colours (test accuracy above 0.9, tests/test_contract.py), so "evaluate
    and predict agree" compares a real classifier, not one that always answers the same class:
    10 epochs of the head on cached frozen features cost about as much as one.
    """
    folder = tmp_path_factory.mktemp("trained")
    run = folder / "run"
    result = run_cli(
        *TINY, "trainer.max_epochs=10", "optimizer.lr=0.01", f"hydra.run.dir={run}", f"paths.data_dir={folder / 'data'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def classifier_from_dicts(
    model: dict,
    strategy: dict,
    optimizer: dict,
    scheduler: dict | None,
    class_names: list[str],
    preprocessing: dict,
    load_pretrained: bool = True,
    data: dict | None = None,
):
    """A ``TransferClassifier`` built from plain config nodes, as a run builds it from its config."""
    from transfer_lightning.data.contract import as_contract
    from transfer_lightning.run.builders import build_classifier, record_of_config

    cfg = OmegaConf.create(
        {"model": model, "strategy": strategy, "optimizer": optimizer or {"_target_": "torch.optim.SGD", "lr": 0.1},
         "scheduler": scheduler, "data": data or {}}
    )  # fmt: skip
    contract = as_contract(preprocessing or {"image_size": 32})
    record = record_of_config(cfg, class_names, contract)
    if data is None:
        record = dataclasses.replace(record, data=None)
    return build_classifier(record, pretrained=load_pretrained)
