"""Export to ONNX and TorchScript: the file, its preprocessing contract, and parity with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from tests.conftest import run_cli
from transfer_lightning import export as export_module
from transfer_lightning.export import ExportMismatch, sample_batch
from transfer_lightning.run.checkpoint import load_classifier


def _export(trained_run: Path, tmp_path: Path, format_: str, *extra: str):
    return run_cli(
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"format={format_}", f"output_dir={tmp_path / 'export'}",
        f"hydra.run.dir={tmp_path / 'run'}", *extra, module="transfer_lightning.export",
    )  # fmt: skip


def _check_contract(path: Path, format_: str) -> dict:
    contract = json.loads(path.read_text())
    assert contract["format"] == format_ and contract["image_size"] == 32
    assert contract["class_names"] == ["class_0", "class_1", "class_2", "class_3"]
    assert contract["mean"] == pytest.approx([0.485, 0.456, 0.406]) and contract["std"] == pytest.approx(
        [0.229, 0.224, 0.225]
    )
    assert contract["parity"]["max_abs_logit_diff"] <= 1e-3
    return contract


def test_onnx_export_matches_pytorch_and_writes_the_contract(trained_run: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    result = _export(trained_run, tmp_path, "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |logit difference|" in result.stdout
    model_file = tmp_path / "export" / "best.onnx"
    _check_contract(tmp_path / "export" / "best.onnx.json", "onnx")
    # independent parity: another batch size than the export's example (dynamic batch axis)
    module = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    images = sample_batch(module.record.preprocessing.to_dict(), size=3, seed=7)
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    exported = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        assert (exported - module(images)).abs().max() < 1e-3


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_torchscript_export_matches_pytorch(trained_run: Path, tmp_path: Path) -> None:
    result = _export(trained_run, tmp_path, "torchscript")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_contract(tmp_path / "export" / "best.torchscript.pt.json", "torchscript")
    module = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    images = sample_batch(module.record.preprocessing.to_dict(), size=5, seed=3)
    scripted = torch.jit.load(str(tmp_path / "export" / "best.torchscript.pt"))
    with torch.no_grad():
        assert (scripted(images) - module(images)).abs().max() < 1e-3


def test_state_dict_export_loads_into_plain_torchvision_with_the_same_logits(trained_run: Path, tmp_path: Path) -> None:
    result = _export(trained_run, tmp_path, "state_dict")
    assert result.returncode == 0, result.stderr[-3000:]
    contract = _check_contract(tmp_path / "export" / "best.pth.json", "state_dict")
    assert contract["model"] == "resnet18" and contract["weights"] == {"source": "random init"}
    assert "num_classes=4" in contract["load"] and "strict=True" in contract["load"]
    # what a user outside the framework does: torchvision's own resnet18, nothing of transfer_lightning
    plain = torchvision.models.resnet18(num_classes=len(contract["class_names"]))
    plain.load_state_dict(torch.load(tmp_path / "export" / "best.pth", weights_only=True), strict=True)
    module = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    images = sample_batch(module.record.preprocessing.to_dict(), size=3, seed=5)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(images), module(images), atol=1e-6)


def test_export_that_drifts_from_pytorch_fails_and_writes_nothing(
    trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    save, load, suffix = export_module.EXPORTERS["torchscript"]
    drifting = (save, lambda path, *model: lambda images: load(path, *model)(images) + 0.01, suffix)
    monkeypatch.setitem(export_module.EXPORTERS, "torchscript", drifting)
    cfg = OmegaConf.create(
        {"ckpt_path": str(trained_run / "checkpoints" / "best.ckpt"), "format": "torchscript",
         "output_dir": str(tmp_path), "parity_batch_size": 2, "parity_tolerance": 1e-3, "tta": "none"}
    )  # fmt: skip
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        export_module.export(cfg)
    assert not list(tmp_path.iterdir())


def test_onnx_without_the_extra_says_how_to_install_it(trained_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocked" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxruntime hidden for this test')\n")
    result = run_cli(
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "format=onnx", f"hydra.run.dir={tmp_path / 'run'}",
        module="transfer_lightning.export", env={"PYTHONPATH": str(blocker.parent)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "pip install 'transfer_lightning[export]'" in result.stderr and "onnxruntime" in result.stderr
    assert "Traceback" not in result.stderr
