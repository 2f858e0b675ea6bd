"""``python -m transfer_lightning.export ckpt_path=... format=onnx|torchscript|state_dict``.

Writes ``<checkpoint name>.onnx`` (or ``.torchscript.pt``, or ``.pth``: the network's plain state
dict, which torchvision's (or timm's) own model of the same architecture loads with ``strict=True``) and
``<that file>.json``, the preprocessing contract (``data/contract.py``: sizes, crop,
interpolation, mean, std, the steps in words) and the class names, beside the checkpoint (or into
``output_dir``), after checking the export against PyTorch on a batch: the largest absolute logit
difference is printed and must stay within ``parity_tolerance``. ``tta=flip`` exports the network with
test-time augmentation inside (the mean of the logits of the image and its mirror) and the JSON says
so; a state dict holds weights only, so its JSON tells the caller to average the two instead.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from omegaconf import DictConfig
from torch import nn

from transfer_lightning.data.contract import Preprocessing, as_contract, preprocessor_for
from transfer_lightning.loggers.mlflow_runs import log_export
from transfer_lightning.recipes.tta import TTA_WORDS, FlipTTA
from transfer_lightning.run.checkpoint import checkpoint_file, load_classifier
from transfer_lightning.utils.cli import check_once, require, tool_main
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_write_text

log = logging.getLogger("transfer_lightning")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install 'transfer_lightning[export]' (or: pip install onnx onnxscript onnxruntime)"


class ExportMismatch(Exception):
    """The exported model's logits differ from PyTorch's by more than the bound."""


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` in ``cfg.format``; returns the written contract."""
    check_once(cfg)
    checkpoint = checkpoint_file(
        require(cfg, "ckpt_path", "ckpt_path=outputs/<date>/<time> (a run folder) or its .ckpt")
    )
    if cfg.format == "onnx":
        _require_onnx()
    module = load_classifier(checkpoint)
    output_dir = Path(cfg.output_dir) if cfg.get("output_dir") else checkpoint.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{checkpoint.stem}{EXPORTERS[cfg.format][2]}"
    parity = export_checked(module, cfg.format, target, cfg.parity_batch_size, cfg.parity_tolerance, cfg.tta)
    contract = {
        "format": cfg.format,
        "file": target.name,
        "model": module.record.model_name,
        **preprocessing_contract(module.record.preprocessing, module.class_names),
        "checkpoint": str(checkpoint.resolve()),
        "weights": module.weights_lineage,
        "tta": tta_contract(cfg.tta, cfg.format),
        "parity": parity,
    }
    if cfg.format == "state_dict":
        contract["load"] = state_dict_loading_hint(module.record.model, len(module.class_names), target.name)
    contract_file = target.with_name(target.name + ".json")
    atomic_write_text(contract_file, json.dumps(contract, indent=2) + "\n")
    print(f"Exported {target} with its preprocessing contract {contract_file}")
    if run_id := log_export(checkpoint, [target, contract_file]):  # the run had logger.mlflow.log_model=true
        print(f"Logged both as artifacts export/ of the MLflow run {run_id}")
    return contract


def export_checked(
    module: nn.Module, format_: str, target: Path, batch_size: int, tolerance: float, tta: str = "none"
) -> dict[str, Any]:
    """Write ``module.net`` (with ``tta=flip`` inside, where the format holds a graph) to ``target`` only if its
    logits match PyTorch's within ``tolerance``."""
    network = module.net.eval()
    if tta == "flip" and format_ != "state_dict":
        network = FlipTTA(network).eval()
    contract = module.record.preprocessing
    example, batch = sample_batch(contract, 2, seed=0), sample_batch(contract, batch_size, seed=1)
    save, load, _ = EXPORTERS[format_]
    model, num_classes = module.record.model, len(module.class_names)
    partial = target.with_name(target.name + ".partial")  # never a half-checked file under the real name
    try:
        save(network, example, partial)
        with torch.no_grad():
            expected = network(batch)
        difference = (load(partial, model, num_classes)(batch) - expected).abs().max().item()
        print(
            f"Parity with PyTorch on {len(batch)} images: max |logit difference| = {difference:.3e} (bound {tolerance:g})"
        )
        if not difference <= tolerance:  # also catches NaN
            raise ExportMismatch(
                f"the {format_} export differs from PyTorch by {difference:.3e} > parity_tolerance={tolerance:g}; "
                "nothing was written"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return {"max_abs_logit_diff": difference, "bound": tolerance, "batch_size": len(batch)}


def tta_contract(tta: str, format_: str) -> dict[str, Any]:
    """Whether test-time augmentation is part of the exported file's contract, and what the caller does."""
    if tta == "none":
        return {"mode": "none", "in_model": False}
    if format_ == "state_dict":
        return {"mode": tta, "in_model": False, "caller": f"compute {TTA_WORDS[tta]} (the weights are plain)"}
    return {"mode": tta, "in_model": True, "note": f"the model returns {TTA_WORDS[tta]}: pass the plain image"}


def preprocessing_contract(preprocessing: Preprocessing | dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """What a consumer of the exported file needs to feed it and read its output: the checkpoint's
    whole contract (``data/contract.py``), its fields and the steps in words."""
    contract = as_contract(preprocessing)
    side = contract.image_size
    return {
        "input": {"name": "images", "shape": ["batch", 3, side, side], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": ["batch", len(class_names)], "note": "softmax gives probabilities"},
        **contract.to_dict(),
        "preprocessing": contract.describe(),
        "class_names": list(class_names),
    }


def sample_batch(contract: Preprocessing | dict[str, Any], size: int, seed: int) -> torch.Tensor:
    """Random decoded pixels through the checkpoint's own device step: inputs of the real range and shape."""
    side = as_contract(contract).decoded_size
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, 3, side, side), dtype=torch.uint8, generator=generator)
    return preprocessor_for(contract)(pixels)


def _require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"format=onnx needs {', '.join(missing)}, not installed; {INSTALL_HINT}")


def state_dict_loading_hint(model: dict[str, Any], num_classes: int, file_name: str) -> str:
    """The two lines of plain torchvision (or timm) that load an exported state dict."""
    return (
        f"model = {_plain_constructor(model)}({model['name']!r}, num_classes={num_classes}); "
        f"model.load_state_dict(torch.load({file_name!r}, weights_only=True), strict=True)"
    )


def _plain_constructor(model: dict[str, Any]) -> str:
    """How the model's own library builds it: ``timm.create_model`` or ``torchvision.models.get_model``."""
    from transfer_lightning.models import backbone_class

    return "timm.create_model" if backbone_class(model).family == "timm" else "torchvision.models.get_model"


# -- formats: save(network, example, path) and load(path, model config, num_classes) -> callable on a float batch
def _save_torchscript(network: nn.Module, example: torch.Tensor, path: Path) -> None:
    # torch.jit is deprecated upstream in favour of torch.export but still works; say so once (docs/evaluate-predict-export.md)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        torch.jit.trace(network, example).save(str(path))


def _load_torchscript(path: Path, model: dict[str, Any], num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        scripted = torch.jit.load(str(path), map_location="cpu").eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scripted(images)

    return run


def _save_onnx(network: nn.Module, example: torch.Tensor, path: Path) -> None:
    for name in ("onnxscript", "onnx_ir"):  # their optimiser passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        network,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,  # one self-contained file
        dynamo=True,
        verbose=False,
    )


def _load_onnx(path: Path, model: dict[str, Any], num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])

    return run


def _save_state_dict(network: nn.Module, example: torch.Tensor, path: Path) -> None:
    # the inner torchvision network's own keys and plain contiguous tensors: nothing of this framework
    torch.save({key: value.detach().contiguous() for key, value in network.state_dict().items()}, path)


def _load_state_dict(path: Path, model: dict[str, Any], num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a user of the file does: the architecture from plain torchvision (or timm) with
    ``num_classes`` set, then ``load_state_dict(strict=True)``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if _plain_constructor(model) == "timm.create_model":
        import timm

        network = timm.create_model(model["name"], pretrained=False, num_classes=num_classes)
    else:
        network = torchvision.models.get_model(model["name"], num_classes=num_classes)
    network.load_state_dict(state, strict=True)
    network.eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(images)

    return run


EXPORTERS = {
    "onnx": (_save_onnx, _load_onnx, ".onnx"),
    "torchscript": (_save_torchscript, _load_torchscript, ".torchscript.pt"),
    "state_dict": (_save_state_dict, _load_state_dict, ".pth"),
}


def _export_or_exit(cfg: DictConfig) -> dict[str, Any]:
    try:
        return export(cfg)
    except ExportMismatch as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


main = tool_main("export", _export_or_exit)


if __name__ == "__main__":
    main()
