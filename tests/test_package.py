"""The project as a package: the wheel holds every config, an install from it works from any folder,
``--help`` says what each command does, and a user's own config folder adds presets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import ROOT, run_cli
from transfer_lightning.utils.config_folder import config_folder

# what `pip wheel` needs of the repository (tests, docs and benchmarks are not packaged)
SOURCES = ["pyproject.toml", "setup.py", "README.md", "transfer_lightning", "hydra_plugins", "conf"]
CONSOLE_SCRIPTS = {
    "transfer-lightning": "transfer_lightning.__main__:main",
    "transfer-lightning-evaluate": "transfer_lightning.evaluate:main",
    "transfer-lightning-predict": "transfer_lightning.predict:main",
    "transfer-lightning-export": "transfer_lightning.export:main",
    "transfer-lightning-sweep-report": "transfer_lightning.sweep_report:main",
}
# a user's own preset, kept outside the package (docs/recipes.md "Your own presets")
MINE = """\
# @package _global_
defaults:
  - override /data: synthetic
model:
  weights: null
trainer:
  max_epochs: 1
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
"""


def build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the sources (a build writes build/ and *.egg-info beside them)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return next((tmp_path / "dist").glob("transfer_lightning-*.whl"))


def _files_under(folder: Path, suffix: str) -> set[str]:
    return {
        path.relative_to(folder).as_posix() for path in folder.rglob(f"*{suffix}") if "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_config_module_and_console_script(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
        entry_points = next(wheel.read(name).decode() for name in names if name.endswith("entry_points.txt"))
    packaged_configs = {name.removeprefix("transfer_lightning/conf/") for name in names if name.endswith(".yaml")}
    assert packaged_configs == _files_under(ROOT / "conf", ".yaml")
    assert {f"transfer_lightning/{name}" for name in _files_under(ROOT / "transfer_lightning", ".py")} <= names
    assert "hydra_plugins/transfer_lightning_sweeps/__init__.py" in names  # the Optuna sweeper plugin
    for script, target in CONSOLE_SCRIPTS.items():
        assert f"{script} = {target}" in entry_points


def test_the_config_folder_of_a_checkout_is_its_top_level_conf() -> None:
    assert config_folder() == ROOT / "conf"


def test_a_users_config_folder_adds_presets_through_hydras_search_path(tmp_path: Path) -> None:
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text(MINE)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_folder()), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "experiment=mine"]
        )  # the same search path as `--config-dir my_conf`
    GlobalHydra.instance().clear()
    assert cfg.data._target_.endswith("SyntheticDataModule") and cfg.model.weights is None
    assert cfg.trainer.max_epochs == 1 and cfg.model.name == "resnet18"  # the rest: the package's defaults


@pytest.mark.parametrize(
    ("module", "says", "next_section"),
    [
        (
            "transfer_lightning",
            "transfer-lightning (python -m transfer_lightning): train",
            "strategy: feature_extract,",
        ),
        (
            "transfer_lightning.predict",
            "transfer-lightning-predict (python -m transfer_lightning.predict): the top",
            "top_k: 5",
        ),
    ],
)
def test_help_starts_with_what_the_command_does_then_its_settings(
    module: str, says: str, next_section: str, tmp_path
) -> None:
    result = run_cli("--help", module=module, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(says), result.stdout[:500]
    assert next_section in result.stdout and "powered by Hydra" not in result.stdout


def test_help_lists_the_options_a_user_chooses_from_their_own_config_folder_included(tmp_path) -> None:
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    (tmp_path / "my_conf" / "experiment" / "mine_broken.yaml").write_text(
        "defaults: [\nkey: : :\n"
    )  # Hydra's to report
    result = run_cli("--config-dir", str(tmp_path / "my_conf"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "data: cifar10, image_folder, synthetic" in lines  # not data/common.yaml, the base each extends
    assert "trainer: ddp, default, deterministic" in lines  # trainer/default is extended too, and the default
    assert next(line for line in lines if line.startswith("experiment: ")).endswith(", fastai_style, mine, mine_broken")
    assert not [line for line in lines if line.startswith(("schema/", "hydra/"))]  # the framework's own


@pytest.mark.parametrize(
    ("module", "key"),
    [
        ("transfer_lightning", "strategy:"),
        ("transfer_lightning.select", "top_k:"),
        ("transfer_lightning.evaluate", "ckpt_path:"),
    ],
)
def test_hydras_cfg_and_info_flags_show_the_config_in_every_command(module: str, key: str, tmp_path) -> None:
    """``--cfg job`` (a flag and its value, not an override ``job``) and ``--info`` run no job: nothing to check."""
    for flags in (["--cfg", "job"], ["--config-dir", str(tmp_path), "--info", "defaults"]):
        result = run_cli(*flags, module=module, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (key in result.stdout) == (flags[0] == "--cfg") and "Error" not in result.stderr, result.stdout[-500:]


def _install_wheel(tmp_path: Path) -> Path:
    """A fresh virtual environment with the wheel installed and this environment's site-packages as its
    dependencies (.pth, added after the install so that pip sees no other transfer_lightning)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(build_wheel(tmp_path))],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    dependencies = [path for path in sys.path if path.endswith("site-packages") and Path(path).is_dir()]
    (Path(own) / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return venv


@pytest.mark.slow  # fast cover: the wheel's file list, the config folder, the user's presets and --help above
def test_a_wheel_in_a_fresh_environment_trains_evaluates_and_predicts_from_any_folder(tmp_path: Path) -> None:
    venv = _install_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "my_conf" / "experiment").mkdir(parents=True)
    (elsewhere / "my_conf" / "experiment" / "mine.yaml").write_text(MINE)
    Image.new("RGB", (40, 30), (200, 40, 40)).save(elsewhere / "photo.png")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
        return result

    where = run("python", "-c", "import transfer_lightning.utils.config_folder as c; print(c.config_folder())")
    assert Path(where.stdout.strip()).is_relative_to(venv), "the package must come from the wheel alone"
    for script in CONSOLE_SCRIPTS:  # Hydra's commands start with their name, argparse's with its usage line
        shown = run(script, "--help").stdout
        assert shown.startswith(script) or "Print the ranked jobs" in shown, shown[:300]
    run("python", "-m", "transfer_lightning", "--config-dir", "my_conf", "experiment=mine", "hydra.run.dir=run")
    checkpoint = elsewhere / "run" / "checkpoints" / "best.ckpt"
    assert (elsewhere / "run" / "run_summary.json").is_file() and checkpoint.is_file()
    run("transfer-lightning-evaluate", f"ckpt_path={checkpoint}", "trainer.accelerator=cpu")
    assert (elsewhere / "run" / "checkpoints" / "best_eval_test").is_dir()
    run("transfer-lightning-predict", f"ckpt_path={checkpoint}", "inputs=photo.png", "trainer.accelerator=cpu",
        "output_dir=predict")  # fmt: skip
    assert "photo.png" in (elsewhere / "predict" / "predictions.csv").read_text()
