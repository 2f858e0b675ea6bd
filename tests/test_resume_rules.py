"""Resume's rules in-process (the CLI tests in test_resume.py run them in a subprocess): which folder a
command continues, what config it runs, and every refusal's sentence."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, compose_config
from tests.test_resume import _hparams, _saved_run
from transfer_lightning.run import folders, job, resume
from transfer_lightning.run.model_record import RECORD_KEY
from transfer_lightning.utils.errors import UserError


def test_the_run_folder_is_resume_or_the_run_holding_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run = _saved_run(tmp_path / "run")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert folders.run_folder_of("~/run", None) == str(run)
    assert folders.run_folder_of(None, str(run / "checkpoints" / "last.ckpt")) == str(run)
    assert folders.run_folder_of("", str(run / "checkpoints" / "best.ckpt")) == str(run)
    loose = tmp_path / "elsewhere" / "checkpoints" / "last.ckpt"  # no .hydra/config.yaml beside it
    loose.parent.mkdir(parents=True)
    assert folders.run_folder_of(None, str(loose)) is None
    assert folders.run_folder_of(None, str(tmp_path / "model.ckpt")) is None
    assert folders.run_folder_of(None, None) is None and folders.run_folder_of(True, "") is None
    assert folders.run_folder_of(None, 5) is None  # not a path
    last = str(run / "checkpoints" / "last.ckpt")
    assert folders._run_dir_resolver(None, last, "outputs/new") == str(run)
    assert folders._hydra_subdir_resolver(None, last).startswith(f"{folders.RESUMED_SUBDIR}-")
    assert folders._hydra_subdir_resolver(None, None) == ".hydra"


def test_the_original_overrides_are_those_of_the_run_a_checkpoint_continues(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    OmegaConf.save(OmegaConf.create(["data.image_size=40", "seed=3"]), run / ".hydra" / "overrides.yaml")
    assert resume.original_overrides(str(run / "checkpoints" / "last.ckpt")) == ["data.image_size=40", "seed=3"]
    assert resume.original_overrides(None) == []
    (run / ".hydra" / "overrides.yaml").unlink()
    assert resume.original_overrides(str(run / "checkpoints" / "last.ckpt")) == []


def test_a_resumed_run_keeps_its_folder_and_writes_its_command_to_a_resumed_subfolder(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    assert folders._run_dir_resolver(str(run), None, str(tmp_path / "new")) == str(run)
    assert folders._run_dir_resolver(None, None, str(tmp_path / "new")) == str(tmp_path / "new")
    assert (tmp_path / "new").is_dir()  # claimed for this run
    assert folders._hydra_subdir_resolver(None, None) == ".hydra"
    subdir = folders._hydra_subdir_resolver(str(run), None)
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


@contextlib.contextmanager
def _hydra_run(composed, output_subdir: str = ".hydra", output_dir: str = "", task: list[str] = (), mode: str = "RUN"):
    """Hydra's run config as a command would set it, for code that reads ``HydraConfig``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    cfg = composed.copy()  # HydraConfig makes the one it holds read-only
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.output_subdir, cfg.hydra.runtime.output_dir = output_subdir, output_dir
        cfg.hydra.overrides.task, cfg.hydra.mode = list(task), RunMode[mode]
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None


def test_dotted_keys_and_typed_override_keys() -> None:
    assert resume._dotted_keys(OmegaConf.create({"a": {"b": 1, "c": {"d": 2}}, "e": 3})) == [
        "a",
        "a.b",
        "a.c",
        "a.c.d",
        "e",
    ]
    assert resume._dotted_keys(5) == []
    assert resume._dotted_keys(OmegaConf.create({"paths": {"out": "${hydra:runtime.output_dir}"}})) == [
        "paths",
        "paths.out",
    ]  # a saved run's config names Hydra's run, which does not exist here: read unresolved
    assert resume._override_keys() == []  # no Hydra run: no command line
    typed = ["resume=/r", "trainer.max_epochs=5", "+trainer.extra=1", "++seed=3", "~callbacks.early_stopping"]
    with _hydra_run(compose_config(TINY, return_hydra_config=True), task=typed):
        assert resume._override_keys() == [
            ("trainer.max_epochs", "trainer.max_epochs=5"),
            *((text, text) for text in typed[2:]),  # an added, forced or deleted key: named as typed
        ]


def test_restored_weights_and_lineage_come_from_the_checkpoint(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    saved = torch.nn.Linear(2, 2)
    path = tmp_path / "last.ckpt"
    record = torch.load(_saved_run(tmp_path / "run") / "checkpoints" / "last.ckpt", weights_only=True)[RECORD_KEY]
    torch.save({"state_dict": saved.state_dict(), RECORD_KEY: {**record, "lineage": {"source": "file"}}}, path)
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
    with pytest.raises(UserError) as refused:
        resume.prepare_resume(compose_config([*TINY, f"resume={run}", "optimizer.lr=0.5"]))
    assert str(refused.value).startswith(
        f"resume={run}: optimizer.lr=0.5 would change optimizer.lr (0.001 in that run)"
    )
    with pytest.raises(UserError, match=r"^give either resume=<run folder> or ckpt_path=<file>, not both$"):
        resume.prepare_resume(
            compose_config([*TINY, f"resume={run}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
        )


def test_a_sweeps_resume_is_left_to_the_sweep(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run")
    composed = compose_config([*TINY, f"resume={run}"], return_hydra_config=True)
    cfg = compose_config([*TINY, f"resume={run}"])
    with _hydra_run(composed, mode="MULTIRUN"):
        assert job.is_multirun() and resume.prepare_resume(cfg) is cfg
    with _hydra_run(composed, mode="RUN"):
        assert not job.is_multirun() and resume.prepare_resume(cfg).ckpt_path.endswith("last.ckpt")


def test_the_resume_command_check_reads_only_a_single_runs_own_overrides(tmp_path: Path) -> None:
    run = _saved_run(tmp_path / "run", "trainer.max_epochs=3")
    gone = tmp_path / "gone"
    for sweep in ("-m", "--multirun"):
        resume.check_resume_command([sweep, f"resume={gone}"])  # a sweep's resume is the sweep's business
    resume.check_resume_command(["resume="])  # no folder named: nothing to check
    resume.check_resume_command(["optimizer.lr=0.5"])  # no resume at all
    resume.check_resume_command([f"resume={run}", "hydra=default", "ckpt_path="])  # Hydra's group; no checkpoint
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
    run = _saved_run(tmp_path / "run")
    resume.forget_refused_resume(UserError("refused"))  # no Hydra run (a caller of train()): nothing to remove
    subdir = f"{folders.RESUMED_SUBDIR}-2026-11-28_10-00-00"
    written = run / subdir
    written.mkdir(parents=True)
    (written / "overrides.yaml").write_text("[]")
    composed = compose_config(TINY, return_hydra_config=True)
    for output_subdir, removed in ((".hydra", False), (subdir, True)):
        with _hydra_run(composed, output_subdir, str(run)), caplog.at_level("INFO", logger=resume.log.name):
            resume.forget_refused_resume(UserError("the schedule differs\nmore"))
        assert written.exists() is not removed and (run / ".hydra" / "config.yaml").is_file()
    assert f"Resume refused; {subdir} removed (the schedule differs)" in caplog.messages
    with _hydra_run(composed, subdir, str(run)):
        resume.forget_refused_resume(UserError("refused again"))  # already gone: no error hides the refusal


COSINE = {"_target_": "transfer_lightning.optim.schedulers.cosine_with_warmup", "_partial_": True}
CHECKPOINT_STATE = "ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', 'every_n_train_steps': 0}"


def _checkpoint(path: Path, hparams: dict | None, callbacks: dict | None = None) -> Path:
    torch.save({"hyper_parameters": hparams, "callbacks": callbacks or {}}, path)
    return path


def test_every_refusal_of_a_checkpoint_that_does_not_fit_names_what_differs(tmp_path: Path) -> None:
    refused = resume.ResumeRefused
    path = _checkpoint(tmp_path / "none.ckpt", None)
    with pytest.raises(refused) as raised:
        resume.check_checkpoint_fits(path, _hparams(4), [], None)
    assert (
        str(raised.value) == f"checkpoint {path} has no transfer_lightning record; it was not written by this project"
    )

    three = {**_hparams(4), "scheduler": {**COSINE, "max_epochs": 3}}
    path = _checkpoint(tmp_path / "cosine.ckpt", three)
    resume.check_checkpoint_fits(path, {**_hparams(4), "scheduler": {**COSINE, "max_epochs": 3}}, [], None)
    with pytest.raises(refused) as raised:
        resume.check_checkpoint_fits(path, _hparams(4), [], None)  # no schedule now
    assert str(raised.value) == (
        f"checkpoint {path} is part way along a schedule over 3 epochs (scheduler.max_epochs, which follows "
        "trainer.max_epochs); this config's spans None: the schedule cannot change mid-run, so resume with "
        "trainer.max_epochs=3 or start a new run"
    )

    path = _checkpoint(tmp_path / "other.ckpt", _hparams(4))
    current = _hparams(4)
    current["class_names"] = ["a", "b", "c", "d"]
    current["preprocessing"] = {**current["preprocessing"], "image_size": 40, "mean": [0.4] * 3, "std": [0.2] * 3}
    current["optimizer"] = {**current["optimizer"], "lr": 0.5}
    with pytest.raises(refused) as raised:
        resume.check_checkpoint_fits(path, current, [], None)
    allowed = ", ".join(resume.ALLOWED_ON_RESUME)
    assert str(raised.value) == (
        f"checkpoint {path} does not match this config (optimizer.lr: checkpoint {_hparams(4)['optimizer']['lr']!r}, "
        "config 0.5; class_names: checkpoint ['class_0', 'class_1', 'class_2', 'class_3'], config ['a', 'b', 'c', "
        "'d']; preprocessing.crop_size: checkpoint 32, config 40; preprocessing.image_size: checkpoint 32, config 40 "
        f"(+3 more)); resume with the run's own settings (only {allowed} may change) or start a new run"
    )
    current["preprocessing"] = _hparams(4)["preprocessing"]
    current["optimizer"] = _hparams(4)["optimizer"]
    with pytest.raises(refused) as raised:  # exactly one difference: no "(+N more)"
        resume.check_checkpoint_fits(path, current, [], None)
    assert "config ['a', 'b', 'c', 'd']); resume with" in str(raised.value)


@pytest.mark.parametrize(("extra", "more"), [(4, ""), (5, " (+1 more)")])
def test_the_first_four_differences_are_named_and_the_rest_counted(tmp_path: Path, extra: int, more: str) -> None:
    path = _checkpoint(tmp_path / "last.ckpt", _hparams(4))
    current = _hparams(4)
    current["optimizer"] = {**current["optimizer"], **{f"extra_{i}": i for i in range(extra)}}  # new keys: differences
    with pytest.raises(resume.ResumeRefused) as raised:
        resume.check_checkpoint_fits(path, current, [], None)
    named = "; ".join(f"optimizer.extra_{i}: checkpoint None, config {i}" for i in range(4))
    assert f"does not match this config ({named}{more}); resume with" in str(raised.value)


def test_a_config_as_the_run_passes_it_is_compared_resolved(tmp_path: Path) -> None:
    """``module.hparams`` holds the run's config nodes, interpolations unresolved (``${trainer.max_epochs}``)."""
    plain = {**_hparams(4), "scheduler": {**COSINE, "max_epochs": 3}}
    path = _checkpoint(tmp_path / "last.ckpt", plain)
    run = OmegaConf.create({**plain, "trainer": {"max_epochs": 3}})
    run.scheduler.max_epochs = "${trainer.max_epochs}"
    resume.check_checkpoint_fits(path, {key: run[key] for key in plain}, [], None)
    run.trainer.max_epochs = 5
    with pytest.raises(resume.ResumeRefused, match="schedule over 3 epochs"):
        resume.check_checkpoint_fits(path, {key: run[key] for key in plain}, [], None)


def test_what_old_checkpoints_left_implicit_is_filled_in_only_where_it_is_missing() -> None:
    def comparable(**nodes):
        return resume._comparable({key: nodes.get(key) for key in resume._MUST_MATCH})

    assert comparable()["preprocessing"] is None and comparable()["model"] is None
    stated = {"name": "resnet18", "backbone": "my.own.Backbone"}
    assert comparable(model=stated)["model"] == stated  # stated: kept as it is
    assert comparable(strategy={"name": "resnet18"})["strategy"] == {"name": "resnet18"}  # only the model's
    assert comparable(model={"name": "resnet18"})["model"] == {
        "name": "resnet18",
        "backbone": "transfer_lightning.models.resnet.ResNet",
    }
    assert comparable(preprocessing={"image_size": 32})["preprocessing"]["interpolation"] == "bilinear"


def test_callback_state_is_refused_only_when_no_callback_of_this_run_would_restore_it(tmp_path: Path) -> None:
    states = {CHECKPOINT_STATE: {"dirpath": str(tmp_path)}, "LearningRateMonitor": {}, "RunCheckpoint{}": {}}
    path = _checkpoint(tmp_path / "last.ckpt", _hparams(4), states)
    resume.check_checkpoint_fits(path, _hparams(4), [CHECKPOINT_STATE, "RunCheckpoint{}"], None)  # other keys: free
    for kept in ([CHECKPOINT_STATE], ["RunCheckpoint{}"]):
        orphan = next(key for key in (CHECKPOINT_STATE, "RunCheckpoint{}") if key not in kept)
        with pytest.raises(resume.ResumeRefused) as raised:
            resume.check_checkpoint_fits(path, _hparams(4), kept, None)
        assert str(raised.value) == (
            f"checkpoint {path} holds callback state {orphan} that no callback of this config would restore "
            "(its monitor, mode or save frequency changed); resume with the run's own callbacks.* settings"
        )


def test_a_checkpoint_from_another_folder_warns_that_best_checkpoint_bookkeeping_starts_afresh(
    tmp_path: Path, caplog
) -> None:
    written = tmp_path / "old" / "checkpoints"
    path = _checkpoint(tmp_path / "last.ckpt", _hparams(4), {CHECKPOINT_STATE: {"dirpath": str(written)}})
    keys = [CHECKPOINT_STATE]
    with caplog.at_level("WARNING", logger=resume.log.name):
        resume.check_checkpoint_fits(path, _hparams(4), keys, str(written))  # the same folder
        resume.check_checkpoint_fits(path, _hparams(4), keys, None)  # no checkpoint folder in this run
        assert caplog.text == ""
        resume.check_checkpoint_fits(path, _hparams(4), keys, str(tmp_path / "new"))
    assert caplog.messages == [
        f"Continuing from a checkpoint written in {written}: this run checkpoints to {tmp_path / 'new'}, so its "
        "best-checkpoint bookkeeping starts afresh (resume=<run folder> continues in place)"
    ]
