"""Checkpoints read and written in-process (run/checkpoint.py): what a file must hold to be rebuilt,
each refusal's sentence, the rebuilt model, and where saves go."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import torch

from tests.conftest import classifier_from_dicts
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.run.checkpoint import (
    AtomicCheckpointIO,
    checkpoint_origin,
    load_checkpoint_safely,
    load_classifier,
    read_checkpoint,
)
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_torch_save

FREEZE = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 4}
PREPROCESSING = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransferClassifier]:
    """A checkpoint as a run writes it; its model.weights names ImageNet weights this machine does not have."""
    module = classifier_from_dicts(
        model={"name": "resnet18", "weights": None}, strategy=FREEZE, optimizer={}, scheduler=None,
        class_names=["a", "b", "c"], preprocessing=PREPROCESSING,
    )  # fmt: skip
    record = module.record.to_dict(module.weights_lineage, module.strategy.state_dict())
    record["model"]["weights"] = "DEFAULT"
    path = tmp_path_factory.mktemp("run") / "best.ckpt"
    torch.save({"transfer_lightning": record, "state_dict": module.state_dict(), "epoch": 2}, path)
    return path, module


def test_a_checkpoint_rebuilds_its_trained_model_without_fetching_weights(saved_run, monkeypatch) -> None:
    path, trained = saved_run
    monkeypatch.setenv("TORCH_HOME", str(path.parent / "no-weights-here"))  # a download would fail offline
    rebuilt = load_classifier(path)
    assert not rebuilt.training and rebuilt.class_names == ["a", "b", "c"]
    for name, tensor in trained.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


def test_weights_that_do_not_fit_the_described_model_are_refused(saved_run, tmp_path) -> None:
    path, _ = saved_run
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["net.extra.weight"] = torch.zeros(1)
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    with pytest.raises(UserError) as refused:
        load_classifier(edited)
    message = str(refused.value)
    assert message.startswith(
        f"the weights in {edited} do not fit the resnet18 model it describes (Error(s) in loading"
    )
    assert 'Unexpected key(s) in state_dict: "net.extra.weight"' in message
    assert message.endswith("); the checkpoint is damaged or was edited")
    for number in range(30):  # a long list of keys is cut: the sentence stays one readable line
        checkpoint["state_dict"][f"net.extra_{number}.weight"] = torch.zeros(1)
    torch.save(checkpoint, edited)
    with pytest.raises(UserError) as refused:
        load_classifier(edited)
    quoted = str(refused.value).split(" model it describes (", 1)[1].rsplit("); the checkpoint", 1)[0]
    assert len(quoted) == 200 and quoted.startswith("Error(s) in loading state_dict for TransferClassifier:")


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        ({"w": torch.zeros(2)}, "PATH is a plain state dict, not a transfer_lightning checkpoint; it holds no class "
                                "names or preprocessing. Train with it as model.weights=<file> and use the .ckpt "
                                "that run writes"),
        ({"hyper_parameters": {"model": {}}, "state_dict": {}}, "PATH is not a transfer_lightning checkpoint "
         "(hyper_parameters lack strategy, class_names, preprocessing); it may come from another framework. "
         "Pass a .ckpt written by python -m transfer_lightning"),
        ([torch.zeros(1)], "PATH is not a transfer_lightning checkpoint (it has no transfer_lightning record); it may "
         "come from another framework. Pass a .ckpt written by python -m transfer_lightning"),
        ({"state_dict": {}, "epoch": 1}, "PATH is not a transfer_lightning checkpoint (it has no transfer_lightning "
         "record); it may come from another framework. Pass a .ckpt written by python -m transfer_lightning"),
        ({"hyper_parameters": {"model": {}, "strategy": {}, "class_names": [], "preprocessing": {}}},
         "PATH is not a transfer_lightning checkpoint (it has no state_dict); it may come from another framework. "
         "Pass a .ckpt written by python -m transfer_lightning"),
        ({"hyper_parameters": {"model": {}, "strategy": {"_target_": "os.system", "inner": [{"_target_": "x"}]},
                               "class_names": [], "preprocessing": {}}, "state_dict": {}},
         "PATH is refused: hyper_parameters.strategy._target_ names 'os.system', which is not a freezing strategy of "
         "transfer_lightning (a file is data: only the project's own classes, and torch.optim's optimizers and "
         "schedulers, are built from one); nothing was imported, created or written"),
        ({"hyper_parameters": {"model": {}, "strategy": {"_target_": "transfer_lightning.strategies.FreezeStages",
                                                         "nested": [{"_target_": "builtins.eval"}]},
                               "class_names": [], "preprocessing": {}}, "state_dict": {}},
         "PATH is refused: hyper_parameters.strategy.nested[0] names 'builtins.eval' as a class to build, but "
         "hyper_parameters.strategy.nested[0] holds a plain value, never a class (a file is data); nothing was "
         "imported, created or written"),
    ],
)  # fmt: skip
def test_files_that_are_not_our_checkpoints_are_refused_in_one_sentence(tmp_path, content, sentence) -> None:
    path = tmp_path / "file.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError) as refused:
        read_checkpoint(path)
    assert str(refused.value) == sentence.replace("PATH", str(path))


def test_nested_strategy_settings_without_a_class_stay_data_and_meet_their_schema(tmp_path) -> None:
    hparams = {"model": {"name": "resnet18"}, "class_names": ["a", "b"], "preprocessing": {"image_size": 32},
               "strategy": {**FREEZE, "options": {"depth": 2}}}  # fmt: skip
    path = tmp_path / "file.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": {}}, path)
    with pytest.raises(UserError) as refused:
        read_checkpoint(path)
    assert str(refused.value) == (
        f"{path} is refused: hyper_parameters.strategy.options is not a setting of "
        "transfer_lightning.strategies.FreezeStages; allowed: frozen_stages, lr_decay, lr_decay_unit, train_bn, "
        "unfrozen_bn"
    )


def _plant(marker: str) -> None:
    Path(marker).write_text("code ran while unpickling")


class _Payload:
    """Runs ``_plant`` when unpickled: what a malicious .ckpt would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_plant, (self.marker,))


def test_a_file_that_would_run_code_when_unpickled_is_refused_and_runs_nothing(saved_run, tmp_path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(saved_run[0], weights_only=True)
    path = tmp_path / "evil.ckpt"
    torch.save({**checkpoint, "epoch": _Payload(marker)}, path)
    with pytest.raises(UserError, match=f"^{path} cannot be loaded as a checkpoint: "):
        read_checkpoint(path)
    with pytest.raises(UserError, match=f"^checkpoint {path} cannot be loaded: "):
        load_checkpoint_safely(path)
    with pytest.raises(UserError, match=f"^checkpoint {path} cannot be loaded: "):  # a sentence, not a traceback
        checkpoint_origin(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: unpickling it runs the code
    assert marker.read_text() == "code ran while unpickling"


def test_missing_or_damaged_files_are_refused_with_the_reason(tmp_path) -> None:
    missing = tmp_path / "none.ckpt"
    with pytest.raises(UserError) as refused:
        read_checkpoint(missing)
    assert (
        str(refused.value)
        == f"checkpoint {missing} does not exist; pass ckpt_path=<run folder> or <run folder>/checkpoints/best.ckpt"
    )
    with pytest.raises(UserError) as refused:
        load_checkpoint_safely(missing)
    assert str(refused.value) == f"checkpoint {missing} does not exist; give the path to a .ckpt file of a run"
    damaged = tmp_path / "cut.ckpt"
    torch.save({"w": torch.zeros(100)}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:100])
    reason = "the file is truncated or damaged (an interrupted write or an incomplete copy); use an intact copy"
    with pytest.raises(UserError) as refused:
        read_checkpoint(damaged)
    assert str(refused.value) == f"{damaged} cannot be loaded as a checkpoint: {reason}"
    with pytest.raises(UserError) as refused:
        load_checkpoint_safely(damaged)
    assert str(refused.value) == f"checkpoint {damaged} cannot be loaded: {reason}"


def test_safe_loading_follows_map_location(tmp_path) -> None:
    path = tmp_path / "t.ckpt"
    torch.save({"w": torch.ones(2)}, path)
    assert load_checkpoint_safely(path)["w"].device.type == "cpu"
    assert load_checkpoint_safely(path, map_location="meta")["w"].device.type == "meta"
    assert AtomicCheckpointIO().load_checkpoint(path)["w"].device.type == "cpu"
    assert AtomicCheckpointIO().load_checkpoint(path, map_location="meta")["w"].device.type == "meta"


def test_checkpoints_name_their_origin_by_epoch_and_monitored_score(tmp_path) -> None:
    path = tmp_path / "best.ckpt"
    monitored = {"ModelCheckpoint{}": {"monitor": "val/acc", "current_score": torch.tensor(0.458333)}}
    torch.save({"epoch": 2, "callbacks": {"EarlyStopping{}": {"wait_count": 0}, **monitored}}, path)
    assert checkpoint_origin(path) == "best.ckpt (epoch 2, val/acc 0.4583)"
    torch.save({"epoch": 2, "callbacks": {"ModelCheckpoint{}": {"monitor": "val/acc", "current_score": None}}}, path)
    assert checkpoint_origin(path) == "best.ckpt (epoch 2)"
    torch.save({"state_dict": {}}, path)
    assert checkpoint_origin(str(path)) == "best.ckpt"


def test_a_checkpoint_saved_again_names_its_new_epoch_not_the_one_read_before(tmp_path) -> None:
    """The origin is read once while the file is unchanged (the test's two figures both ask), not after."""
    path = tmp_path / "best.ckpt"
    for epoch in (3, 4):  # the same size each time: a new file, as every checkpoint is saved (atomically)
        atomic_torch_save({"epoch": epoch, "callbacks": {}}, path)
        assert checkpoint_origin(path) == checkpoint_origin(path) == f"best.ckpt (epoch {epoch})"


def test_local_saves_are_atomic_and_remote_ones_go_through_lightnings_own_io(tmp_path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    io.save_checkpoint({"w": torch.zeros(2)}, "memory://bucket/run/last.ckpt")
    with fsspec.open("memory://bucket/run/last.ckpt", "rb") as handle:
        assert torch.equal(torch.load(handle, weights_only=True)["w"], torch.zeros(2))
    with pytest.raises(TypeError, match="storage_options"):  # Lightning's IO gets them, and has no use for them
        io.save_checkpoint({"w": torch.zeros(2)}, "memory://bucket/run/best.ckpt", storage_options={"anon": True})


def test_an_errors_first_line_keeps_the_line_a_header_announces() -> None:
    from transfer_lightning.utils.errors import first_line

    assert first_line(RuntimeError("Error(s) in loading:\n\tUnexpected key(s): a.\n\tMissing: b")) == (
        "Error(s) in loading: Unexpected key(s): a."
    )
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("  \n")) == "ValueError" and first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("abcdef"), 3) == "abc"
