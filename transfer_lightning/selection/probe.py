"""Select's first stage: each candidate's linear probe, its size and its speed, saved in the select folder.

For each candidate the whole frozen backbone's output (the pooled vector the head sees) for the train,
val and test images comes from the feature cache (``cache/``): computed once per model, weights,
preprocessing and data, then reused by every later select and resume. The head is fitted on it
(``linear_probe.py``), the network is timed on this device, and the result is written to
``probes/<candidate>.json`` with the head in ``probes/<candidate>.head.pt`` (what the fine-tune starts
from). A resumed select reads the probes it finds instead of probing again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.cache import use_feature_cache
from transfer_lightning.config.schemas import ProbeSchema, StatsSchema
from transfer_lightning.models import backbone_class
from transfer_lightning.models.backbone import eval_mode
from transfer_lightning.models.head_init import write_head_init
from transfer_lightning.models.lineage import describe_lineage
from transfer_lightning.run.builders import build_classifier, build_datamodule, build_trainer, record_of_config
from transfer_lightning.run.job import read_preset
from transfer_lightning.run.preprocessing import explicit_data_keys, run_preprocessing
from transfer_lightning.run.speed import tune_for_device
from transfer_lightning.selection.candidates import Candidate
from transfer_lightning.selection.linear_probe import Fit, fit_linear_probe
from transfer_lightning.selection.significance import accuracy_interval
from transfer_lightning.strategies import FreezeStages
from transfer_lightning.utils.cli import searchpath_overrides
from transfer_lightning.utils.config_folder import config_folder
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_write_text
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger("transfer_lightning")

PROBES = "probes"


@dataclass
class ProbeResult:
    """What ``probes/<candidate>.json`` records of one candidate's probe."""

    candidate: str
    model: str
    weights: str
    parameters: int
    images_per_second: float
    image_size: int
    feature_dim: int
    weight_decay: float
    val_accuracies: dict[str, float]  # per penalty tried
    val_acc: float
    val_ci: list[float]
    val_images: int
    test_acc: float
    test_images: int
    train_images: int
    iterations: int
    device: str
    feature_cache: dict[str, list[str]]
    seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def probe_path(folder: Path, candidate: Candidate) -> Path:
    return Path(folder) / PROBES / f"{candidate.name}.json"


def head_path(folder: Path, candidate: Candidate) -> Path:
    return Path(folder) / PROBES / f"{candidate.name}.head.pt"


def read_probe(folder: Path, candidate: Candidate) -> ProbeResult | None:
    """The probe a (killed) select already saved for ``candidate``; None when there is none, or it is not a
    sound record of this candidate (then it is probed again)."""
    path, head = probe_path(folder, candidate), head_path(folder, candidate)
    if not (path.is_file() and head.is_file()):
        return None
    try:
        values = json.loads(path.read_text())
        result = ProbeResult(**{field.name: values[field.name] for field in fields(ProbeResult)})
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s cannot be read (%s): probing %s again", path, error, candidate.text)
        return None
    return result if result.candidate == candidate.text else None


def probe_candidate(
    cfg: DictConfig, overrides: list[str], candidate: Candidate, folder: Path, probe: ProbeSchema, stats: StatsSchema
) -> ProbeResult:
    """Probe ``candidate`` (its training config ``cfg``, composed from ``overrides``), save and return the result."""
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = _frozen_parts(cfg, overrides)
    cache = use_feature_cache(datamodule, module, trainer)
    if not cache.enabled:
        raise UserError(
            f"the probe of candidates[{candidate.index}] ({candidate.text}) reads the frozen features from the "
            f"feature cache, which is {cache.reason}"
        )
    device = trainer.strategy.root_device
    train, val, test = ((x.to(device).float(), y.to(device)) for x, y in (cache.datamodule.features[s] for s in
                                                                          ("train", "val", "test")))  # fmt: skip
    weight_decays = list(probe.weight_decays)
    fits = PhaseProgress(f"Linear probe fits ({candidate.text})", len(weight_decays), unit="penalties")
    with fits:
        head = fit_linear_probe(
            train, val, len(module.class_names), weight_decays, probe.max_iterations, on_fit=_fit_logger(fits)
        )
    write_head_init(head_path(folder, candidate), head.weight, head.bias, list(datamodule.class_names))
    val_correct = head.correct(val).cpu().numpy()
    interval = accuracy_interval(val_correct, stats.bootstrap_samples, stats.seed)
    result = ProbeResult(
        candidate=candidate.text,
        model=module.backbone.describe(),
        weights=describe_lineage(module.weights_lineage),
        parameters=sum(p.numel() for p in module.net.parameters()),
        images_per_second=round(inference_speed(module, trainer, datamodule, probe.throughput_seconds), 1),
        image_size=datamodule.image_size,
        feature_dim=int(train[0].shape[1]),
        weight_decay=head.weight_decay,
        val_accuracies={f"{decay:g}": accuracy for decay, accuracy in head.val_accuracies.items()},
        val_acc=interval.mean,
        val_ci=[interval.low, interval.high],
        val_images=len(val[1]),
        test_acc=float(head.correct(test).float().mean()),
        test_images=len(test[1]),
        train_images=len(train[1]),
        iterations=head.iterations,
        device=str(device),
        feature_cache={"hits": cache.hits, "misses": cache.misses},
        seconds=round(time.perf_counter() - started, 2),
    )
    atomic_write_text(probe_path(folder, candidate), result.to_json())
    log.info(
        "Probe of %s: val acc %.4f (95%% CI %.4f-%.4f) at weight decay %g, %s parameters, %.1f images/s",
        candidate.text, result.val_acc, *result.val_ci, result.weight_decay, f"{result.parameters:,}",
        result.images_per_second,
    )  # fmt: skip
    return result


def inference_speed(module: Any, trainer: L.Trainer, datamodule: Any, seconds: float) -> float:
    """Images per second of the whole network on this device, at the run's image size, batch size and
    precision: one warm-up batch, then batches of random images until ``seconds`` have passed."""
    device = trainer.strategy.root_device
    size, batch_size = datamodule.image_size, datamodule.batch_size
    images = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    net = module.net.to(device)
    with eval_mode(net), torch.inference_mode(), trainer.precision_plugin.forward_context():
        net(images)  # warm-up: kernel selection, caches
        _synchronize(device)
        done, started = 0, time.perf_counter()
        while done == 0 or time.perf_counter() - started < seconds:
            net(images)
            _synchronize(device)
            done += batch_size
    return done / (time.perf_counter() - started)


def _frozen_parts(cfg: DictConfig, overrides: list[str]) -> tuple[Any, Any, L.Trainer]:
    """The candidate's data (unaugmented), its network with every stage frozen, and a one-device trainer,
    built as ``train.py`` builds them (so the feature cache entries are the ones its runs use)."""
    family = backbone_class(cfg.model)
    starting_run = family.ensure_weights(cfg.model.name, cfg.model.weights)
    defaults = family.default_preprocessing(cfg.model.name, cfg.model.weights)
    preprocessing = run_preprocessing(
        cfg.data, defaults, starting_run, explicit_data_keys(overrides, _preset(overrides))
    )
    datamodule = build_datamodule(  # a recipe's augmentation and mixing are the fine-tune's, not the probe's
        cfg.data, preprocessing=preprocessing, augment="none", mixup_alpha=0.0, cutmix_alpha=0.0, feature_cache="auto"
    )
    single = OmegaConf.merge(cfg, {"trainer": {"devices": 1, "num_nodes": 1, "strategy": "auto"}})
    trainer = build_trainer(single, [], logger=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    record = record_of_config(cfg, datamodule.class_names, datamodule.contract)
    strategy = FreezeStages(frozen_stages="all", stage_names=family.stage_names_of(cfg.model.name))
    module = build_classifier(record, pretrained=True, strategy=strategy)
    autotune = cfg.trainer.get("benchmark") is None and not cfg.trainer.get("deterministic")
    tune_for_device(module, trainer, autotune=autotune)
    return datamodule, module, trainer


def _preset(overrides: list[str]) -> Any:
    """The experiment preset an ``experiment=<name>`` override names, for the preprocessing keys it sets: from
    the user's config folders (a ``hydra.searchpath=[...]`` override, as ``--config-dir``) or the project's."""
    names = [item.split("=", 1)[1] for item in overrides if item.lstrip("+").startswith("experiment=")]
    if not names:
        return None
    searched = searchpath_overrides(overrides)
    folders = OverridesParser.create().parse_overrides(searched[-1:])[0].value() if searched else []
    return read_preset(names[-1], [*folders, config_folder()])


def _fit_logger(progress: PhaseProgress):
    def on_fit(fit: Fit) -> None:
        log.info(
            "  weight decay %g: val acc %.4f, val loss %.4f (%d L-BFGS iterations)",
            fit.weight_decay, fit.val_accuracy, fit.val_loss, fit.iterations,
        )  # fmt: skip
        progress.advance()

    return on_fit


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
