"""Resume's rules in-process (the CLI tests in test_resume.py run them in a subprocess): which folder a
command continues, what config it runs, and every refusal's sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, compose_config
from tests.test_resume import _saved_run
from transfer_lightning.run import resume
from transfer_lightning.utils.errors import UserError


def test_the_run_folder_is_resume_or_the_run_holding_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run = _saved_run(tmp_path / "run")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resume.run_folder_of("~/run", None) == str(run)
    assert resume.run_folder_of(None, str(run / "checkpoints" / "last.ckpt")) == str(run)
    assert resume.run_folder_of("", str(run / "checkpoints" / "best.ckpt")) == str(run)
    loose = tmp_path / "elsewhere" / "checkpoints" / "last.ckpt"  # no .hydra/config.yaml beside it
    loose.parent.mkdir(parents=True)
    assert resume.run_folder_of(None, str(loose)) is None
    assert resume.run_folder_of(None, str(tmp_path / "model.ckpt")) is None
    assert resume.run_folder_of(None, None) is None and resume.run_folder_of(True, "") is None


def test_the_original_overrides_are_those_of_the_run_a_checkpoint_continues(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    OmegaConf.save(OmegaConf.create(["data.image_size=40", "seed=3"]), run / ".hydra" / "overrides.yaml")
    assert resume.original_overrides(str(run / "checkpoints" / "last.ckpt")) == ["data.image_size=40", "seed=3"]
    assert resume.original_overrides(None) == []
    (run / ".hydra" / "overrides.yaml").unlink()
    assert resume.original_overrides(str(run / "checkpoints" / "last.ckpt")) == []


def test_a_resumed_run_keeps_its_folder_and_writes_its_command_to_a_resumed_subfolder(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    assert resume._run_dir_resolver(str(run), None, str(tmp_path / "new")) == str(run)
    assert resume._run_dir_resolver(None, None, str(tmp_path / "new")) == str(tmp_path / "new")
    assert (tmp_path / "new").is_dir()  # claimed for this run
    assert resume._hydra_subdir_resolver(None, None) == ".hydra"
    subdir = resume._hydra_subdir_resolver(str(run), None)
    assert subdir.startswith(".hydra/resumed-20") and len(subdir) == len(".hydra/resumed-2026-01-31_12-00-00")


def test_prepare_resume_runs_the_saved_config_from_its_last_checkpoint(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run", "strategy=gradual", "seed=7")
    cfg = compose_config([*TINY, f"resume={run}"])
    prepared = resume.prepare_resume(cfg)
    assert prepared.seed == 7 and prepared.strategy._target_.endswith("GradualUnfreeze")
    assert prepared.resume is None and prepared.ckpt_path == str((run / "checkpoints" / "last.ckpt").resolve())
    assert OmegaConf.is_struct(prepared)
    fresh = compose_config(TINY)
    assert resume.prepare_resume(fresh) is fresh


@pytest.mark.parametrize(
    ("make", "value", "ckpt_given", "sentence"),
    [
        (None, True, False, "resume=True is not a run folder; give the folder of the run to continue, e.g. "
                            "resume=outputs/2026-01-31/12-00-00"),
        ("run", "RUN", True, "give either resume=<run folder> or ckpt_path=<file>, not both"),
        ("empty", "RUN", False, "resume=RUN: RUN/.hydra/config.yaml does not exist; give the folder of a run "
                                "(it holds .hydra/)"),
        ("no_checkpoint", "RUN", False, "resume=RUN: RUN/checkpoints/last.ckpt does not exist, so there is "
                                        "nothing to resume; start anew"),
    ],
)  # fmt: skip
def test_each_folder_that_cannot_be_resumed_is_refused_in_its_sentence(tmp_path, make, value, ckpt_given, sentence):
    folder = tmp_path / "run"
    if make == "run":
        _saved_run(folder)
    elif make == "empty":
        folder.mkdir()
    elif make == "no_checkpoint":
        _saved_run(folder)
        (folder / "checkpoints" / "last.ckpt").unlink()
    value = str(folder) if value == "RUN" else value
    with pytest.raises(UserError) as refused:
        resume._resumable_run(value, ckpt_given)
    assert str(refused.value) == sentence.replace("RUN", str(folder))


def test_a_schedule_over_its_own_length_refuses_only_another_length(tmp_path: Path) -> None:
    cosine = OmegaConf.load(
        _saved_run(tmp_path / "cosine", "scheduler=cosine", "trainer.max_epochs=3") / ".hydra" / "config.yaml"
    )
    resume._check_schedule_length(cosine, 3, "R")  # the same length: fine
    with pytest.raises(UserError) as refused:
        resume._check_schedule_length(cosine, 5, "R")
    assert str(refused.value) == (
        "resume=R: trainer.max_epochs=5 cannot change that run's schedule: its scheduler decays the learning rate "
        "over scheduler.max_epochs = trainer.max_epochs = 3 epochs and the checkpoint is part way along that curve; "
        "resume with trainer.max_epochs=3, or start a new run with the length you want"
    )
    step = OmegaConf.load(
        _saved_run(tmp_path / "step", "scheduler=step", "trainer.max_epochs=3") / ".hydra" / "config.yaml"
    )
    resume._check_schedule_length(step, 9, "R")  # epochs of a step schedule do not depend on the length
    fixed = OmegaConf.merge(cosine, {"scheduler": {"max_epochs": 3}})
    resume._check_schedule_length(fixed, 9, "R")  # a length of its own: not trainer.max_epochs


def test_dotted_keys_and_typed_override_keys() -> None:
    assert resume._dotted_keys(OmegaConf.create({"a": {"b": 1, "c": {"d": 2}}, "e": 3})) == [
        "a",
        "a.b",
        "a.c",
        "a.c.d",
        "e",
    ]
    assert resume._dotted_keys(5) == []
    assert resume._override_keys() == []  # no Hydra run: no command line


def test_restored_weights_and_lineage_come_from_the_checkpoint(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    saved = torch.nn.Linear(2, 2)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": saved.state_dict(), "weights_lineage": {"source": "file"}}, path)
    resume.restore_weights(module, path)
    assert torch.equal(module.weight, saved.weight) and module.weights_lineage == {"source": "file"}
    assert (
        resume._saved_checkpoint_dir({"callbacks": {"EarlyStopping{}": {}, "RunCheckpoint{x}": {"dirpath": "/d"}}})
        == "/d"
    )
    assert resume._saved_checkpoint_dir({}) is None


def test_prepare_resume_takes_the_allowed_overrides_of_the_command_and_logs_what_it_resumes(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    run = _saved_run(tmp_path / "run", "trainer.max_epochs=3")
    typed = [("trainer.max_epochs", "trainer.max_epochs=5"), ("trainer.accelerator", "trainer.accelerator=cpu")]
    monkeypatch.setattr(resume, "_override_keys", lambda: typed)
    cfg = compose_config([*TINY, f"resume={run}", "trainer.max_epochs=5"])
    with caplog.at_level("INFO", logger="transfer_lightning.run.resume"):
        prepared = resume.prepare_resume(cfg)
    assert prepared.trainer.max_epochs == 5 and prepared.trainer.accelerator == "cpu"
    assert f"Resuming {run} from last.ckpt" in caplog.messages
    monkeypatch.setattr(resume, "_override_keys", lambda: [("optimizer.lr", "optimizer.lr=0.5")])
    with pytest.raises(UserError, match=r"optimizer.lr=0.5 would change optimizer.lr \(0.001 in that run\)"):
        resume.prepare_resume(compose_config([*TINY, f"resume={run}", "optimizer.lr=0.5"]))
    with pytest.raises(UserError, match=r"^give either resume=<run folder> or ckpt_path=<file>, not both$"):
        resume.prepare_resume(
            compose_config([*TINY, f"resume={run}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
        )


def test_the_resume_command_check_reads_only_a_single_runs_own_overrides(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run", "trainer.max_epochs=3")
    gone = tmp_path / "gone"
    for sweep in ("-m", "--multirun"):
        resume.check_resume_command([sweep, f"resume={gone}"])  # a sweep's resume is the sweep's business
    resume.check_resume_command(["resume="])  # no folder named: nothing to check
    resume.check_resume_command([f"resume={run}", "hydra/launcher=basic", "hydra.run.dir=x", "ckpt_path=null"])
    with pytest.raises(UserError) as refused:
        resume.check_resume_command([f"resume={run}", "-v", "optimizer.lr=0.5"])  # Hydra's flags are skipped
    assert str(refused.value).startswith(
        f"resume={run}: optimizer.lr=0.5 would change optimizer.lr (0.001 in that run)"
    )
    with pytest.raises(UserError, match=r"^give either resume=<run folder> or ckpt_path=<file>, not both$"):
        resume.check_resume_command([f"resume={run}", "ckpt_path=/some/last.ckpt"])
    with pytest.raises(UserError) as refused:
        resume.check_resume_command([f"resume={run}", "+extra=1"])
    assert str(refused.value).startswith(f"resume={run}: +extra=1 is not a setting of that run")


def test_each_override_is_checked_in_turn_with_the_closest_key_and_the_runs_value(tmp_path: Path) -> None:
    saved = OmegaConf.load(
        _saved_run(tmp_path / "run", "scheduler=cosine", "trainer.max_epochs=3") / ".hydra" / "config.yaml"
    )
    allowed = "a resumed run may only change " + ", ".join(resume.ALLOWED_ON_RESUME)
    texts = {"trainer.accelerator": "trainer.accelerator=cpu", "optimizer.lr": "optimizer.lr=0.5"}
    with pytest.raises(UserError) as refused:  # an allowed key first does not end the check
        resume.check_resume_overrides(saved, {}, texts, "R")
    assert str(refused.value) == (
        f"resume=R: optimizer.lr=0.5 would change optimizer.lr (0.001 in that run), part of the experiment its "
        f"checkpoint was trained with; {allowed}, or start a new run"
    )
    with pytest.raises(UserError) as refused:
        resume.check_resume_overrides(saved, {}, {"model": "model=resnet34"}, "R")
    assert str(refused.value).startswith("resume=R: model=resnet34 would change model, part of the experiment")
    with pytest.raises(UserError) as refused:
        resume.check_resume_overrides(saved, {}, {"zzz.qqq": "zzz.qqq=1"}, "R")
    assert str(refused.value) == f"resume=R: zzz.qqq=1 is not a setting of that run; {allowed}"
    with pytest.raises(UserError, match=r"^resume=R: trainer.max_epochs=9 cannot change that run's schedule"):
        resume.check_resume_overrides(
            saved, {"trainer.max_epochs": 9}, {"trainer.max_epochs": "trainer.max_epochs=9"}, "R"
        )
    no_schedule = OmegaConf.merge(saved, {"scheduler": None})
    resume._check_schedule_length(no_schedule, 9, "R")  # no scheduler: any length


def test_a_refused_resume_removes_the_resumed_folder_hydra_wrote_and_nothing_else(tmp_path: Path, caplog) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    run = _saved_run(tmp_path / "run")
    resume.forget_refused_resume(UserError("refused"))  # no Hydra run (a caller of train()): nothing to remove
    written = run / f"{resume.RESUMED_SUBDIR}-2026-11-28_10-00-00"
    written.mkdir(parents=True)
    (written / "overrides.yaml").write_text("[]")
    composed = compose_config(TINY, return_hydra_config=True)
    try:
        for subdir, removed in ((".hydra", False), (f"{resume.RESUMED_SUBDIR}-2026-11-28_10-00-00", True)):
            cfg = composed.copy()  # HydraConfig makes the one it holds read-only
            with read_write(cfg), open_dict(cfg):
                cfg.hydra.output_subdir, cfg.hydra.runtime.output_dir = subdir, str(run)
            HydraConfig.instance().set_config(cfg)
            with caplog.at_level("INFO", logger=resume.log.name):
                resume.forget_refused_resume(UserError("the schedule differs\nmore"))
            assert written.exists() is not removed and (run / ".hydra" / "config.yaml").is_file()
        assert f"Resume refused; {written.relative_to(run)} removed (the schedule differs)" in caplog.text
    finally:
        HydraConfig.instance().cfg = None
