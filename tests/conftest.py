"""Shared fixtures: the real config composed and shrunk, and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "conf")

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
    """The real config, composed as the CLI would (without running it).

    ``paths.*`` point at the project root and ``output_dir`` since no Hydra run sets them.
    """
    overrides = [f"paths.root_dir={ROOT}", f"paths.output_dir={output_dir}", *(overrides or [])]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


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
