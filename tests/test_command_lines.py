"""What a new user types and gets back: a misspelt key or option is one sentence with a did-you-mean in the
command's first second; the tools take a run folder for ckpt_path and write only where they say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

TOOLS = ("transfer_lightning.evaluate", "transfer_lightning.predict", "transfer_lightning.export")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (["optimizer.learning_rate=0.1"], "optimizer.learning_rate is not a setting of torch.optim.Adam; allowed: "
         "amsgrad, betas, eps, lr, weight_decay; did you mean lr?"),
        (["sed=3"], "sed=3 sets a key that is not a setting of this project; did you mean seed=3?"),
        (["data.roots=/x"], "data.roots is not a setting of transfer_lightning.data.CIFAR10DataModule; allowed: "),
        (["strategy=finetuen"], "strategy=finetuen is not an option of strategy; did you mean finetune? (options: "
         "feature_extract, fine_tune, finetune, full, gradual, lp_ft)"),
        (["+optimizer.learning_rate=0.1"], "optimizer.learning_rate is not a setting of torch.optim.Adam"),
        (["data.train_size=500", "data.test_size=200"], "data.train_size is not a setting of "  # two mistakes
         "transfer_lightning.data.CIFAR10DataModule; allowed: "),
        (["data.augment=standrd"], "data.augment='standrd' is not allowed; expected none | standard | trivial | "
         "randaugment | augmix | aug_transforms (did you mean standard?)"),
        (["-m", "strategy=full,finetuen"], "strategy=finetuen is not an option of strategy; did you mean finetune?"),
    ],
)  # fmt: skip
def test_a_misspelt_key_or_option_is_one_sentence_with_a_guess_before_torch_loads(tmp_path, typed, expected) -> None:
    result = run_cli(*typed, env={"PYTHONPROFILEIMPORTTIME": "1"}, cwd=tmp_path)
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(said) == 1 and said[0].startswith("Error: ") and expected in said[0], said
    assert "data.roots" not in expected or "did you mean root?" in said[0]
    assert not imported & {"torch", "lightning"}  # the first second: before torch loads
    assert list(tmp_path.iterdir()) == []  # Hydra wrote nothing


@pytest.mark.parametrize("module", TOOLS)
def test_a_tools_misspelt_key_is_one_sentence_and_writes_nothing(tmp_path, module) -> None:
    result = run_cli("ckpt_path=x.ckpt", "grid_sise=3", module=module, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: grid_sise=3 sets a key that is not a setting of this project")
    assert ("did you mean grid_size=3?" in lines[0]) == module.endswith("evaluate")
    assert list(tmp_path.iterdir()) == []


def test_the_tools_take_a_run_folder_say_which_checkpoint_and_write_only_where_they_say(trained_run, tmp_path) -> None:
    """evaluate and export write beside the checkpoint (or output_dir), predict into output_dir: no
    outputs/<tool>/<date>/<time>/ of Hydra's, and nothing at all for a call that fails."""
    evaluated = run_cli(f"ckpt_path={trained_run}", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}",
                        module="transfer_lightning.evaluate", cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    best = trained_run / "checkpoints" / "best.ckpt"
    assert f"Checkpoint: {best} (the run folder's best)" in evaluated.stderr + evaluated.stdout
    exported = run_cli(f"ckpt_path={trained_run}", "format=state_dict", f"output_dir={tmp_path / 'export'}",
                       module="transfer_lightning.export", cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "export"]  # no outputs/evaluate|export
    for module in TOOLS:
        inputs = ["inputs=x.png"] if module.endswith("predict") else []
        failed = run_cli(f"ckpt_path={tmp_path / 'no-such-run'}", *inputs, module=module, cwd=tmp_path)
        assert failed.returncode == 2 and "does not exist" in failed.stderr, failed.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "export"]  # a failed call left nothing


def test_a_folder_that_is_no_run_is_one_sentence(tmp_path: Path) -> None:
    result = run_cli(f"ckpt_path={tmp_path}", module="transfer_lightning.evaluate", cwd=tmp_path)
    assert result.returncode == 2 and "is a folder without checkpoints/best.ckpt" in result.stderr, result.stderr


def test_a_single_run_is_composed_once_by_hydra_and_checked_before_hydra_writes(tmp_path, monkeypatch) -> None:
    """A single run does not compose its config a second time to check it (about 0.2 s of every run): Hydra's
    composition is checked (``ConfigCheck``) before Hydra writes the run folder, and the job runs with Hydra's
    own error reporting (no ``HYDRA_FULL_ERROR`` left set)."""
    import sys

    from transfer_lightning import __main__ as command
    from transfer_lightning import train
    from transfer_lightning.config import compose

    composed, jobs = [], []
    monkeypatch.setattr(compose, "compose_checked", lambda *args, **kwargs: composed.append(args))
    monkeypatch.setattr(
        train, "hydra_job", lambda cfg: jobs.append((cfg.optimizer.lr, os.environ.get("HYDRA_FULL_ERROR")))
    )
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["tl", f"hydra.run.dir={run}", "data=synthetic", "optimizer.lr=0.01"])
    command.main()
    assert composed == [] and jobs == [(0.01, None)] and (run / ".hydra" / "config.yaml").is_file()
    refused = tmp_path / "refused"
    monkeypatch.setattr(
        sys, "argv", ["tl", f"hydra.run.dir={refused}", "strategy=gradual", "strategy.milestones=[3,1]"]
    )
    with pytest.raises(SystemExit) as exited:
        command.main()
    assert exited.value.code == 2 and not refused.exists() and len(jobs) == 1 and composed == []
    assert "HYDRA_FULL_ERROR" not in os.environ
