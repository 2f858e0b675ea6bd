"""``make bench``: the book's plain PyTorch loop against the framework, side by side, same data.

Six measurements, in this one process (and one child process in (5)) on the same image files (a fixed subset of
``../shared/data/cifar10-jpeg`` when present, else generated 32x32 JPEGs of the same shape):

1. the plain loop (ImageFolder, PIL ``Resize`` + ``ToTensor`` + ``Normalize`` per image, batch
   32, no cache) against ``train(cfg)`` doing the same schedule: images/s each and the ratio,
   for feature extraction and for full fine-tuning;
2. a 4-learning-rate x 5-epoch feature-extraction sweep, the plain loop's way against the
   framework's (one feature cache shared across the sweep): wall time each and the ratio;
3. the framework's feature pass (filling the cache from uint8 images) against a bare
   inference-mode, channels_last forward on pre-loaded, pre-resized tensors: the ratio, for
   resnet18 and for one non-ResNet backbone (convnext_tiny);
4. the framework's full fine-tuning step throughput against a bare training step on pre-loaded
   tensors: the ratio (the cost of everything that is not the model);
5. the fixed cost of one job of (2)'s sweep once the cache holds its features (1 epoch): the
   command line run inside this process (its imports done), with and without its figures, and as
   a process of its own; and where that time goes, phase by phase (CPU and wall seconds);
6. a full fine-tuning step with ``recipe=timm`` (RandAugment, mixup / CutMix, EMA of the weights,
   label smoothing) against the same step with ``data.augment=none``, side by side: the ratio (the
   cost of the recipe's pieces, every one on the device and batched);
7. select's probe stage (``python -m transfer_lightning.select``) over 4 candidates against one
   ``strategy=feature_extract`` run of 5 epochs per candidate, each with a cold feature cache: wall
   time each, the ratio, and both rankings by val accuracy.

Timings are medians of ``--reps`` repetitions (the sweep: ``--sweep-reps``). Writes the table
and the machine's description to ``BENCHMARKS.md`` (``--output``). ``--tiny`` runs every path
in seconds (used by the test suite); ``--device cuda`` runs on a GPU with bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import logging
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import transforms  # noqa: E402

from transfer_lightning.cache import use_feature_cache  # noqa: E402
from transfer_lightning.config.schemas import ProbeSchema, StatsSchema  # noqa: E402
from transfer_lightning.data.base import seeded_split  # noqa: E402
from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from transfer_lightning.recipes.ema import ema_callbacks  # noqa: E402
from transfer_lightning.run.builders import build_callbacks, build_logger, build_trainer, classifier_for  # noqa: E402
from transfer_lightning.run.speed import tune_for_device  # noqa: E402
from transfer_lightning.selection.candidates import Candidate  # noqa: E402
from transfer_lightning.selection.probe import probe_candidate  # noqa: E402
from transfer_lightning.train import train  # noqa: E402
from transfer_lightning.utils.config_folder import config_folder  # noqa: E402

CIFAR_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
SPLIT_SEED = 42
GPU_HEADING = "## GPU (`make gpu-check`)"
# sections written by hand or by another benchmark (transfer.py, gpu-check), kept when this bench rewrites the file
KEPT_HEADINGS = (
    "## Offline transfer benchmark",
    "## recipe=timm at 32 px",
    "## Issue 31",
    "## The default run's first epoch",
    GPU_HEADING,
)
PROFILE_HEADING = "Where the time of one cache-hit job (5) goes:"
PROFILE_NOTE = (
    "one more job of (5), each phase the CPU and wall seconds spent in the functions that do it "
    "(`JOB_PHASES` in `benchmarks/bench.py`, timed per call); CPU counts every thread of the process."
)


@dataclass
class Sizes:
    """How much work each measurement does (the CPU defaults take about 20 minutes on 2 idle cores)."""

    image_size: int = 224
    batch_size: int = 32  # the book's
    # Images per class (val_per_class of them go to validation). A run has fixed costs (Trainer start,
    # checkpoints, TensorBoard figures, the test) that only a realistic image count amortises: the
    # sweep needs a few hundred images for what caching saves to show (32 per class keeps the sweep
    # at about 5 minutes on 2 cores). Full fine-tuning is compute-bound; its target is a whole run
    # on at least 2,000 images (every fixed per-run cost counted), measured once each way.
    train_per_class: int = 10  # (1) feature extraction, (3)
    full_train_per_class: int = 201  # (1) full fine-tuning: 10 classes x 200 training images + 1 for validation
    full_reps: int = 1  # (1) full fine-tuning: one whole run each way takes minutes on a CPU
    sweep_train_per_class: int = 32  # (2)
    val_per_class: int = 1
    test_per_class: int = 1
    step_batches: int = 3  # (4): training batches per repetition (the first one is warm-up)
    recipe_step_batches: int = 5  # (6): the same, each way (the two differ by a few percent: more steps)
    epochs_fe: int = 5  # (1) feature extraction: the 5-epoch run of the issue (and of the sweep)
    epochs_full: int = 1  # (1) full fine-tuning
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    sweep_epochs: int = 5
    reps: int = 3
    sweep_reps: int = 1
    cache_hit_sweep_jobs: int = 4  # (5): a sweep of 5 jobs against a sweep of 1 gives 4 jobs' cost
    # (6): select's candidates, random init as everywhere here (speed does not depend on the weights)
    select_models: tuple[str, ...] = ("resnet18", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")
    select_throughput_s: float = 3.0  # probe.throughput_seconds: select's default


@dataclass
class Row:
    name: str
    plain: str
    framework: str
    ratio: float | None
    target: str
    notes: str = ""
    extra: dict = field(default_factory=dict)


# -- data ------------------------------------------------------------------------------------
def make_subset(folder: Path, source: Path | None, sizes: Sizes, train_per_class: int) -> str:
    """Copy a fixed subset of ``source`` (class folders of JPEGs) into ``folder``, or generate one."""
    if source is not None and (source / "train").is_dir():
        for split, count in (("train", train_per_class), ("test", sizes.test_per_class)):
            for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
                target = folder / split / class_dir.name
                target.mkdir(parents=True, exist_ok=True)
                for path in sorted(class_dir.iterdir())[:count]:
                    shutil.copy(path, target / path.name)
        return f"CIFAR-10 JPEG subset of {source}"
    generator = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", sizes.test_per_class)):
        for label in range(4):
            target = folder / split / f"class_{label}"
            target.mkdir(parents=True, exist_ok=True)
            colour = generator.integers(0, 255, 3)
            for index in range(count):
                pixels = (0.6 * colour + 0.4 * generator.integers(0, 255, (32, 32, 3))).astype(np.uint8)
                Image.fromarray(pixels).save(target / f"{index:04d}.jpg", quality=95)
    return "synthetic 32x32 JPEGs (CIFAR-10 copy not found)"


def num_classes(folder: Path) -> int:
    return sum(1 for p in (folder / "train").iterdir() if p.is_dir())


# -- the book's plain loop -------------------------------------------------------------------
def plain_datasets(folder: Path, image_size: int, val_size: int):
    """torchvision ImageFolder with per-image PIL transforms, split like the framework's data."""
    transform = transforms.Compose(
        [transforms.Resize(image_size), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    train_full = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
    test = torchvision.datasets.ImageFolder(str(folder / "test"), transform=transform)
    train_idx, val_idx = seeded_split(len(train_full), val_size, SPLIT_SEED)
    return Subset(train_full, train_idx.tolist()), Subset(train_full, val_idx.tolist()), test


def plain_run(datasets, classes: int, full: bool, lr: float, epochs: int, device: torch.device, batch: int) -> int:
    """The book's loop: train epochs with a validation pass each, then the test. Returns images seen."""
    train_set, val_set, test_set = datasets
    model = torchvision.models.resnet18(weights=None)
    if not full:
        for parameter in model.parameters():
            parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, classes)
    model = model.to(device)
    if full:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.fc.parameters(), lr=lr)
    loss_function = nn.CrossEntropyLoss()
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=0)
    seen = 0
    for _ in range(epochs):
        model.train()
        total_loss, correct = 0.0, 0
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = loss_function(outputs, labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * inputs.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
        seen += len(train_set)
        seen += plain_evaluate(model, val_set, device, batch)
    return seen + plain_evaluate(model, test_set, device, batch)


def plain_evaluate(model: nn.Module, dataset, device: torch.device, batch: int) -> int:
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0):
            inputs, labels = inputs.to(device), labels.to(device)
            correct += (model(inputs).argmax(1) == labels).sum().item()
    return len(dataset)


def job_overrides(folder: Path, work: Path, sizes: Sizes, device: str) -> list[str]:
    """What every framework job of the bench sets: the data in ``folder``, its sizes, the device, no bars."""
    return [
        f"paths.data_dir={work / 'data'}",
        f"data.root={folder}",
        "data.download=false",
        f"data.val_size={sizes.val_per_class * num_classes(folder)}",
        f"data.image_size={sizes.image_size}",
        f"data.batch_size={sizes.batch_size}",
        "model.weights=null",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "~callbacks.progress_bar",
    ]


# -- the framework ---------------------------------------------------------------------------
def framework_config(folder: Path, work: Path, name: str, sizes: Sizes, device: str, *overrides: str):
    """The real composed config, pointed at ``folder``; runs land in ``work/runs/name``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_folder()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.root_dir={ROOT}",
                f"paths.output_dir={work / 'runs' / name}",
                *job_overrides(folder, work, sizes, device),
                *overrides,
            ],
        )


def framework_run(cfg) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own report table
        return train(cfg)


def framework_parts(cfg, extra_callbacks=()):
    """Datamodule, module and trainer built as ``train.py`` builds them."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule)
    callbacks = [*build_callbacks(cfg.get("callbacks")), *ema_callbacks(cfg.get("ema")), *extra_callbacks]
    trainer = build_trainer(cfg, callbacks, build_logger(cfg.get("logger")))
    tune_for_device(module, trainer, compile_net=cfg.get("compile", False))
    return datamodule, module, trainer


class StepTimes(Callback):
    """Wall-clock time and batch size at the end of every training batch (after the device finished it)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.times.append(time.perf_counter())
        self.sizes.append(len(batch[1]))

    def images_per_second(self) -> float:
        """Over every step but the first (warm-up): images of those steps / their time."""
        return sum(self.sizes[1:]) / (self.times[-1] - self.times[0])


# -- bare ceilings ---------------------------------------------------------------------------
def preloaded_batches(datamodule, device: torch.device, count: int | None = None) -> list:
    batch = datamodule.batch_size
    """Every (train+val+test) image resized and normalised once, on ``device``, channels_last."""
    images = torch.cat([getattr(datamodule.splits, s).images for s in ("train", "val", "test")])
    labels = torch.cat([getattr(datamodule.splits, s).labels for s in ("train", "val", "test")])
    if count is not None:
        images, labels = images[: count * batch], labels[: count * batch]
    x = datamodule.preprocessor(images.to(device)).contiguous(memory_format=torch.channels_last)
    return list(zip(x.split(batch), labels.to(device).split(batch), strict=True))


def bare_model(classes: int, device: torch.device, train: bool) -> nn.Module:
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, classes)
    return model.to(device, memory_format=torch.channels_last).train(train)


def autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bare_features(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """What the head sees, written out by hand for each benchmarked architecture (no framework code)."""
    if name.startswith("convnext"):
        return model.classifier[1](model.classifier[0](model.avgpool(model.features(x))))  # pool, LayerNorm, flatten
    return torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(
        model.maxpool(model.relu(model.bn1(model.conv1(x))))))))), 1)  # fmt: skip


def bare_forward_ips(batches, classes: int, device: torch.device, name: str = "resnet18") -> float:
    model = torchvision.models.get_model(name, weights=None).to(device, memory_format=torch.channels_last).eval()
    with torch.inference_mode(), autocast(device):
        model(batches[0][0])  # warm-up (kernel selection)
        synchronize(device)
        started = time.perf_counter()
        for x, _ in batches:
            bare_features(model, name, x)
        synchronize(device)
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - started)


def bare_step_ips(batches, classes: int, device: torch.device, warmup: int = 1) -> float:
    """A bare SGD step (bf16 autocast on CUDA, channels_last) on pre-loaded batches; the first ``warmup`` untimed."""
    model = bare_model(classes, device, train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for x, y in batches[:warmup]:  # like the framework's first steps (excluded there too)
        step(x, y)
    synchronize(device)
    started = time.perf_counter()
    for x, y in batches[warmup:]:
        step(x, y)
    synchronize(device)
    return sum(len(x) for x, _ in batches[warmup:]) / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- measurements ----------------------------------------------------------------------------
def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def compare_runs(folder, work, sizes, device, classes, full: bool) -> Row:
    """(1): the same schedule through the plain loop and through ``train(cfg)``."""
    epochs = sizes.epochs_full if full else sizes.epochs_fe
    val_size = sizes.val_per_class * classes
    datasets = plain_datasets(folder, sizes.image_size, val_size)
    strategy = ["strategy=full", "optimizer=sgd", "optimizer.lr=1e-3", "optimizer.momentum=0.9"] if full else [
        "strategy=feature_extract", "optimizer=adam", "optimizer.lr=1e-3"]  # fmt: skip
    plain_ips, framework_ips, cache = [], [], None
    for rep in range(sizes.full_reps if full else sizes.reps):
        seconds, seen = timed(
            lambda: plain_run(datasets, classes, full, 1e-3, epochs, torch.device(device), sizes.batch_size)
        )
        plain_ips.append(seen / seconds)
        name = f"{'full' if full else 'fe'}-{rep}"
        cfg = framework_config(folder, work / name, name, sizes, device, *strategy, f"trainer.max_epochs={epochs}")
        seconds, summary = timed(lambda cfg=cfg: framework_run(cfg))
        framework_ips.append(seen / seconds)
        cache = summary["feature_cache"]
    plain, framework = median(plain_ips), median(framework_ips)
    label = "full fine-tuning" if full else "feature extraction"
    return Row(
        f"(1) {label}, {epochs} epoch(s): images/s",
        f"{plain:.1f}",
        f"{framework:.1f}",
        framework / plain,
        ">= 0.95x: at most 5% more than the plain loop (CPU)" if full else ">= 1.5x (CPU)",
        "cache on, cold each rep: the frozen pass runs once, not once per epoch"
        if cache["enabled"]
        else "cache off (nothing frozen): the same convolutions as the plain loop, compute-bound on a CPU",
    )


def compare_sweeps(folder, work, sizes, device, classes) -> Row:
    """(2): the sweep as four plain runs, and as four ``train(cfg)`` jobs sharing one cache."""
    datasets = plain_datasets(folder, sizes.image_size, sizes.val_per_class * classes)
    plain_times, framework_times, hits, job_times = [], [], [], []
    plain_cpu, framework_cpu = [], []
    for rep in range(sizes.sweep_reps):
        cpu = time.process_time()
        seconds, _ = timed(lambda: [
            plain_run(datasets, classes, False, lr, sizes.sweep_epochs, torch.device(device), sizes.batch_size) for lr in sizes.sweep_lrs
        ])  # fmt: skip
        plain_times.append(seconds)
        plain_cpu.append(time.process_time() - cpu)
        shared = work / f"sweep-{rep}"  # one cache folder for the whole sweep, cold at its start
        started, cpu = time.perf_counter(), time.process_time()
        for job, lr in enumerate(sizes.sweep_lrs):
            job_started = time.perf_counter()
            cfg = framework_config(
                folder, shared, f"job{job}", sizes, device, "strategy=feature_extract", "optimizer=adam",
                f"optimizer.lr={lr}", f"trainer.max_epochs={sizes.sweep_epochs}",
            )  # fmt: skip
            hits.append(len(framework_run(cfg)["feature_cache"]["hits"]))
            job_times.append(time.perf_counter() - job_started)
        framework_times.append(time.perf_counter() - started)
        framework_cpu.append(time.process_time() - cpu)
    plain, framework = median(plain_times), median(framework_times)
    jobs = ", ".join(f"{seconds:.1f}" for seconds in job_times[: len(sizes.sweep_lrs)])
    return Row(
        f"(2) sweep {len(sizes.sweep_lrs)} lr x {sizes.sweep_epochs} epochs: wall s",
        f"{plain:.1f}",
        f"{framework:.1f}",
        plain / framework,
        ">= 15x",
        f"cache hits per job: {hits[: len(sizes.sweep_lrs)]}; each job's wall s: {jobs}; CPU s: plain "
        f"{median(plain_cpu):.1f}, framework {median(framework_cpu):.1f} ({median(plain_cpu) / median(framework_cpu):.2f}x)",
    )


def compare_feature_pass(folder, work, sizes, device, classes, model: str = "resnet18") -> Row:
    """(3): filling the cache from uint8 images against a bare forward on pre-loaded tensors."""
    framework_ips, bare_ips = [], []
    for rep in range(sizes.reps):
        cfg = framework_config(
            folder, work / f"pass-{rep}", "pass", sizes, device, "strategy=feature_extract", f"model={model}"
        )
        datamodule, module, trainer = framework_parts(cfg)
        images = sum(len(getattr(datamodule.splits, s)) for s in ("train", "val", "test"))
        report = use_feature_cache(datamodule, module, trainer)
        assert report.misses == ["train", "val", "test"], report.summary()
        framework_ips.append(images / report.seconds)
        bare_ips.append(bare_forward_ips(preloaded_batches(datamodule, trainer.strategy.root_device), classes,
                                         trainer.strategy.root_device, model))  # fmt: skip
    framework, bare = median(framework_ips), median(bare_ips)
    return Row(
        f"(3) feature pass vs bare forward, {model}: images/s",
        f"{bare:.1f} (bare)",
        f"{framework:.1f}",
        framework / bare,
        ">= 0.9",
        f"framework: decode-free uint8 -> resize -> normalise -> {module.backbone.num_stages} stages, hashed and saved",
    )


# a few full fine-tuning steps, no validation (nothing to monitor)
STEPS_ONLY = ("trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
              "~callbacks.early_stopping", "~callbacks.model_checkpoint")  # fmt: skip


def framework_steps(
    folder, work, sizes, device, *overrides: str, steps: int | None = None
) -> tuple[float, L.Trainer, object]:
    """Images/s of ``steps`` full fine-tuning steps through the framework (the first, a warm-up, excluded)."""
    timer = StepTimes()
    cfg = framework_config(folder, work, "steps", sizes, device, *overrides, *STEPS_ONLY,
                           f"trainer.limit_train_batches={steps or sizes.step_batches}")  # fmt: skip
    datamodule, module, trainer = framework_parts(cfg, extra_callbacks=[timer])
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(module, datamodule=datamodule)
    return timer.images_per_second(), trainer, datamodule


def compare_steps(folder, work, sizes, device, classes) -> Row:
    """(4): full fine-tuning steps through Lightning against a bare step on pre-loaded tensors."""
    framework_ips, bare_ips = [], []
    for rep in range(sizes.reps):
        ips, trainer, datamodule = framework_steps(folder, work / f"steps-{rep}", sizes, device, "strategy=full",
                                                   "optimizer=sgd")  # fmt: skip
        framework_ips.append(ips)
        device_ = trainer.strategy.root_device
        bare_ips.append(bare_step_ips(preloaded_batches(datamodule, device_, sizes.step_batches), classes, device_))
    framework, bare = median(framework_ips), median(bare_ips)
    return Row(
        "(4) full fine-tuning step vs bare step: images/s",
        f"{bare:.1f} (bare)",
        f"{framework:.1f}",
        framework / bare,
        ">= 0.9",
        f"{sizes.step_batches - 1} timed steps of {sizes.batch_size} after 1 warm-up",
    )


@dataclass(frozen=True)
class Phase:
    """A phase of one job: the time spent in ``functions``, less that in ``minus`` (timed on their own).

    A function is ``(module, attribute)``, where the job's code looks it up (``train.py`` imports most
    of them by name). ``part``: a part of the phase above it, shown under it, not added to the total.
    """

    label: str
    functions: tuple[tuple[str, str], ...]
    minus: tuple[tuple[str, str], ...] = ()
    part: bool = False


TRAIN = "transfer_lightning.train"
ASSEMBLE = "transfer_lightning.run.assemble"  # assemble_run: the run's objects built
OUTCOME = "transfer_lightning.run.outcome"  # record_completed: the summary written, the report printed
TRAINER = ("lightning.pytorch", "Trainer")
CONFIG_CHECK = ("transfer_lightning.utils.cli", "ConfigCheck.on_run_start")
JOB_PHASES = (
    Phase("command line composed and checked before Hydra starts (a sweep, resume=; not a single run)",
          (("transfer_lightning.__main__", "check_command_line"),)),
    Phase("Hydra: the config composed (its mode, the job), run folder, logging", (("<job>", ""),),
          minus=(("transfer_lightning.__main__", "check_command_line"), CONFIG_CHECK, (TRAIN, "train"))),
    Phase("Hydra's composition checked against the schemas (ConfigCheck)", (CONFIG_CHECK,)),
    Phase("config checks (resume, schemas, strategy, run folder)",
          ((TRAIN, "prepare_resume"), (TRAIN, "check_training_config"), (TRAIN, "check_run_folder"))),
    Phase("callbacks, loggers, Trainer built",
          ((ASSEMBLE, "build_callbacks"), (ASSEMBLE, "build_logger"), (ASSEMBLE, "build_trainer"))),
    Phase("data: images listed, decoded, split", (
        (ASSEMBLE, "build_datamodule"), (ASSEMBLE, "prepare_data_once_per_node"),
        ("transfer_lightning.data.base", "ClassificationDataModule.setup"))),
    Phase("model built (backbone, head, strategy, optimizer)",
          ((ASSEMBLE, "build_classifier"), (ASSEMBLE, "describe_model"), (ASSEMBLE, "tune_for_device"))),
    Phase("feature cache: plan, key, 3 entries loaded", ((ASSEMBLE, "use_feature_cache"),)),
    Phase("hyperparameters and lineage to the loggers", ((ASSEMBLE, "hparams_columns"), (TRAIN, "publish_run_start"))),
    Phase("fit: 1 epoch on cached features", ((TRAINER[0], "Trainer.fit"),)),
    Phase("of which: val confusion-matrix figure",
          (("transfer_lightning.callbacks", "ConfusionMatrixImage.on_validation_epoch_end"),), part=True),
    Phase("of which: checkpoints written", ((TRAINER[0], "Trainer.save_checkpoint"),), part=True),
    Phase("test on best.ckpt", ((TRAIN, "test_best"),)),
    Phase("of which: test confusion matrix and prediction grid", (
        ("transfer_lightning.callbacks", "ConfusionMatrixImage.on_test_epoch_end"),
        ("transfer_lightning.callbacks", "PredictionGridImage.on_test_batch_end"),
        ("transfer_lightning.callbacks", "PredictionGridImage.on_test_epoch_end")), part=True),
    Phase("summary: HPARAMS, run_summary.json, report", (
        (TRAIN, "run_summary"), (OUTCOME, "write_hparams"), (OUTCOME, "write_summary"), (OUTCOME, "publish_run_end"),
        (OUTCOME, "print_report"))),
)  # fmt: skip
JOB = ("<job>", "")  # the whole job, timed by the caller


class PhaseClock:
    """CPU and wall seconds spent in each function of ``JOB_PHASES`` while ``installed()``: each is
    wrapped where the job looks it up (a timer per call, no profiler: a profiler's overhead falls
    unevenly and more than doubled the config's composing, which is many small Python calls)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], list[float]] = {}  # function -> [CPU, wall]
        self._depth: dict[tuple[str, str], int] = {}

    @contextlib.contextmanager
    def installed(self):
        replaced = []
        functions = {function for phase in JOB_PHASES for function in (*phase.functions, *phase.minus)} - {JOB}
        for function in sorted(functions):
            module, attribute = function
            owner = importlib.import_module(module)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = vars(owner)[name]
            setattr(owner, name, self._timed(function, original))
            replaced.append((owner, name, original))
        try:
            yield self
        finally:
            for owner, name, original in reversed(replaced):
                setattr(owner, name, original)

    def time_job(self, job: Callable[[], object]) -> None:
        self._timed(JOB, job)()

    def _timed(self, function: tuple[str, str], original: Callable) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            depth = self._depth.get(function, 0)
            if depth:  # a call within a call of the same function: counted once
                return original(*args, **kwargs)
            self._depth[function] = 1
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent = self.seconds.setdefault(function, [0.0, 0.0])
                spent[0] += time.process_time() - cpu
                spent[1] += time.perf_counter() - wall
                self._depth[function] = 0

        return timed

    def spent(self, functions: tuple[tuple[str, str], ...]) -> tuple[float, float]:
        found = [self.seconds.get(function, [0.0, 0.0]) for function in functions]
        return sum(cpu for cpu, _ in found), sum(wall for _, wall in found)

    def table(self) -> str:
        """The job's CPU and wall seconds per phase, the rest and the total, as a Markdown table."""
        total_cpu, total_wall = self.spent((JOB,))
        lines = ["| phase | CPU s | wall s |", "| --- | --- | --- |"]
        counted_cpu = counted_wall = 0.0
        for phase in JOB_PHASES:
            cpu, wall = self.spent(phase.functions)
            minus_cpu, minus_wall = self.spent(phase.minus)
            cpu, wall = cpu - minus_cpu, wall - minus_wall
            if not phase.part:
                counted_cpu, counted_wall = counted_cpu + cpu, counted_wall + wall
            label = f"&nbsp;&nbsp;{phase.label}" if phase.part else phase.label
            lines.append(f"| {label} | {cpu:.2f} | {wall:.2f} |")
        lines.append(f"| everything else (Lightning's loops, logging, teardown) | {total_cpu - counted_cpu:.2f} | "
                     f"{total_wall - counted_wall:.2f} |")  # fmt: skip
        lines.append(f"| **the whole job, in the process** | **{total_cpu:.2f}** | **{total_wall:.2f}** |")
        return "\n".join(lines)


def cli_arguments(folder: Path, work: Path, sizes: Sizes, device: str, name: str, *overrides: str) -> list[str]:
    """The command line of one feature-extraction job on ``folder`` (as the sweep row's jobs), run in ``work/name``."""
    return [
        f"hydra.run.dir={work / 'runs' / name}",
        *job_overrides(folder, work, sizes, device),
        "strategy=feature_extract",
        "optimizer=adam",
        "trainer.max_epochs=1",
        *overrides,
    ]


def run_command_line(arguments: list[str]) -> None:
    """``python -m transfer_lightning ARGUMENTS`` inside this process (its imports already done)."""
    from transfer_lightning.__main__ import main as command_line

    saved, sys.argv = sys.argv, ["transfer_lightning", *arguments]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            command_line()
    except SystemExit as error:
        if error.code:
            raise RuntimeError(f"the job failed ({error.code}): {output.getvalue()[-2000:]}") from None
    finally:
        sys.argv = saved


def process_times() -> tuple[float, float]:
    """(wall, CPU) seconds so far: this process's CPU time and its finished children's."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime


def cache_hit_job(folder, work, sizes, device) -> tuple[Row, str]:
    """(5): the fixed cost of one cache-hit job: one command line in this process (imports done), with and
    without its two figures; a job of a sweep through the command line, (a sweep of n + 1 jobs - a sweep of 1)
    / n, so that what a sweep pays once (the command line's check, Hydra's mode composition, the sweep
    report) cancels out; one command as a process of its own; and where one job's time goes."""
    job = lambda name, *extra: cli_arguments(folder, work, sizes, device, name, *extra)  # noqa: E731
    run_command_line(job("fill"))  # fills the feature cache and imports what a job needs
    jobs = sizes.cache_hit_sweep_jobs

    def sweep(name: str, count: int) -> float:
        learning_rates = ",".join(f"{1e-3 * (1 + index / 10):.5g}" for index in range(count))
        started = time.perf_counter()
        run_command_line(["-m", f"hydra.sweep.dir={work / 'sweeps' / name}", *job(name)[1:],
                          f"optimizer.lr={learning_rates}"])  # fmt: skip
        return time.perf_counter() - started

    walls, cpus, bare_walls, per_sweep_job = [], [], [], []
    for rep in range(sizes.reps):
        wall, cpu = process_times()
        run_command_line(job(f"hit-{rep}", f"optimizer.lr={1e-3 + rep * 1e-4}"))
        now = process_times()
        walls.append(now[0] - wall)
        cpus.append(now[1] - cpu)
        started = time.perf_counter()
        run_command_line(job(f"bare-{rep}", "~callbacks.confusion_matrix", "~callbacks.prediction_grid"))
        bare_walls.append(time.perf_counter() - started)
        per_sweep_job.append((sweep(f"many-{rep}", jobs + 1) - sweep(f"one-{rep}", 1)) / jobs)
    clock = PhaseClock()
    with clock.installed():
        clock.time_job(lambda: run_command_line(job("timed")))
    command = [sys.executable, "-m", "transfer_lightning", *job("process")]
    wall, cpu = process_times()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if finished.returncode:
        raise RuntimeError(f"python -m transfer_lightning failed: {finished.stderr[-2000:]}")
    now = process_times()
    images = sum(1 for _ in (folder / "train").rglob("*.jpg"))
    row = Row(
        f"(5) one cache-hit job, {images} images, 1 epoch: s",
        f"{now[0] - wall:.2f} (whole process, wall; CPU {now[1] - cpu:.2f})",
        f"{median(walls):.2f} (in the process; CPU {median(cpus):.2f})",
        None,
        "< 1 s in the process",
        f"the command line in this process once the first job imported everything; without the two figures "
        f"(~callbacks.confusion_matrix ~callbacks.prediction_grid): {median(bare_walls):.2f} s; a job of a sweep "
        f"(-m), (a sweep of {jobs + 1} jobs - a sweep of 1) / {jobs}: {median(per_sweep_job):.2f} s",
    )
    return row, clock.table()


def compare_recipe_steps(folder, work, sizes, device, classes) -> Row:
    """(6): full fine-tuning steps with ``recipe=timm`` against the same steps with ``data.augment=none``,
    alternating, on the same images (stored at 32 px, augmented there, resized on the device)."""
    plain_ips, recipe_ips = [], []
    for rep in range(sizes.reps):
        steps = sizes.recipe_step_batches
        plain_ips.append(framework_steps(folder, work / f"plain-{rep}", sizes, device, "strategy=full",
                                         "optimizer=sgd", "data.augment=none", steps=steps)[0])  # fmt: skip
        recipe_ips.append(framework_steps(folder, work / f"timm-{rep}", sizes, device, "recipe=timm", steps=steps)[0])
    plain, recipe = median(plain_ips), median(recipe_ips)
    notes = (
        "recipe=timm: RandAugment 2 ops (kornia, per image) + random resized crop + flip, mixup 0.8 / CutMix 1.0 "
        f"(timm), EMA 0.9998, label smoothing 0.1; {sizes.recipe_step_batches - 1} timed steps of "
        f"{sizes.batch_size} after 1 warm-up, each way, alternating"
    )
    name = "(6) full fine-tuning step, recipe=timm vs augment=none: images/s"
    return Row(name, f"{plain:.1f} (augment=none)", f"{recipe:.1f}", recipe / plain, ">= 0.85", notes)


def compare_select_probe(folder, work, sizes, device, classes) -> Row:
    """(7): select's probe stage over the candidates, and one feature-extraction run per candidate, each
    with its own cold feature cache (nothing shared between the two sides)."""
    run_acc, probe_acc = {}, {}
    started = time.perf_counter()
    for name in sizes.select_models:
        cfg = framework_config(folder, work / "runs" / name, name, sizes, device, f"model={name}",
                               "strategy=feature_extract", f"trainer.max_epochs={sizes.epochs_fe}")  # fmt: skip
        run_acc[name] = framework_run(cfg)["best_val_acc"]
    runs_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for index, name in enumerate(sizes.select_models):
        overrides = [f"data.image_size={sizes.image_size}", f"model={name}"]
        cfg = framework_config(folder, work / "select", name, sizes, device, f"model={name}")
        candidate = Candidate(index, f"model={name}", (f"model={name}",))
        settings = ProbeSchema(throughput_seconds=sizes.select_throughput_s)
        probe = probe_candidate(cfg, overrides, candidate, work / "select", settings, StatsSchema())
        probe_acc[name] = probe.val_acc
    probe_seconds = time.perf_counter() - started

    def ranking(accuracies: dict[str, float]) -> str:
        ranked = sorted(accuracies, key=lambda name: -accuracies[name])
        return " > ".join(f"{name} {100 * accuracies[name]:.0f}%" for name in ranked)

    return Row(
        f"(7) select probe stage, {len(sizes.select_models)} candidates vs {sizes.epochs_fe}-epoch feature_extract "
        "runs: wall s",
        f"{runs_seconds:.1f}",
        f"{probe_seconds:.1f}",
        runs_seconds / probe_seconds,
        ">= 5x; the same ranking or higher accuracies",
        f"val acc, runs: {ranking(run_acc)}; probes: {ranking(probe_acc)}",
    )


# -- report ----------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores (torch threads: {torch.get_num_threads()})",
        "GPU": gpu,
        "torch": f"{torch.__version__}, torchvision {torchvision.__version__}, lightning {L.__version__}",
        "Python": platform.python_version(),
        "load average (1 min) at the end": f"{os.getloadavg()[0]:.1f} (other jobs share this machine; ratios are measured side by side)",
    }


def render(
    rows: list[Row], info: dict[str, str], sizes: Sizes, data: str, device: str, total: float, profile: str
) -> str:
    lines = [
        "| measurement | plain loop / bare | framework | ratio | target | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(f"| {row.name} | {row.plain} | {row.framework} | {ratio} | {row.target} | {row.notes} |")
    described = "\n".join(f"- {key}: {value}" for key, value in info.items())
    return (
        f"Device: `{device}`; data: {data}; image size {sizes.image_size}, batch {sizes.batch_size}; "
        f"medians of {sizes.reps} repetitions (sweep: {sizes.sweep_reps}); resnet18, random init "
        f"(speed does not depend on the weights); images per class (incl. {sizes.val_per_class} for validation): "
        f"{sizes.train_per_class} for (1) feature extraction and (3), {sizes.full_train_per_class} for (1) full "
        f"fine-tuning ({sizes.full_reps} run each way), {sizes.sweep_train_per_class} for (2), plus "
        f"{sizes.test_per_class} test; "
        f"benchmark wall time {total:.0f}s.\n\n" + "\n".join(lines) + f"\n\n{PROFILE_HEADING}\n\n{PROFILE_NOTE}\n\n"
        f"{profile}\n\nMachine:\n{described}\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tiny", action="store_true", help="every path at 32 px with a handful of images (seconds)")
    parser.add_argument("--data", default=str(CIFAR_JPEG), help="class-folder JPEGs; 'none' generates images")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument(
        "--rows", default="1234567", help="the measurements to run, e.g. 25 (the file then holds those)"
    )
    return parser.parse_args(argv)


def sizes_for(args: argparse.Namespace) -> Sizes:
    if args.tiny:
        sizes = Sizes(image_size=32, batch_size=8, train_per_class=3, full_train_per_class=3, sweep_train_per_class=3,
                      test_per_class=1, step_batches=2, recipe_step_batches=2, epochs_fe=1, sweep_lrs=(1e-3, 3e-3),
                      sweep_epochs=2, reps=1, cache_hit_sweep_jobs=1, select_models=("resnet18", "mobilenet_v3_large"),
                      select_throughput_s=0.2)  # fmt: skip
    elif args.device == "cuda":
        sizes = Sizes(train_per_class=100, val_per_class=20, test_per_class=20, step_batches=20, recipe_step_batches=20)
    else:
        sizes = Sizes()
    sizes.reps = args.reps or sizes.reps
    sizes.train_per_class = args.train_per_class or sizes.train_per_class
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("Error: --device cuda asked for, but torch sees no CUDA GPU here", file=sys.stderr)
        return 2
    sizes = sizes_for(args)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transfer_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    random.seed(0)
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as temporary:
        work = Path(temporary)
        source = None if args.data == "none" else Path(args.data)
        data = make_subset(work / "subset", source, sizes, sizes.train_per_class)
        steps_folder = work / "subset-steps"  # (4) needs step_batches full batches of training images
        batches = max(sizes.step_batches, sizes.recipe_step_batches)
        per_class = -(-(batches * sizes.batch_size) // num_classes(work / "subset")) + sizes.val_per_class
        make_subset(steps_folder, source, sizes, per_class)
        make_subset(work / "subset-full", source, sizes, sizes.full_train_per_class)
        make_subset(work / "subset-sweep", source, sizes, sizes.sweep_train_per_class)
        classes = num_classes(work / "subset")
        rows, profile = [], ""
        for label, measure in (
            ("(1) feature extraction", lambda: compare_runs(work / "subset", work / "r1", sizes, args.device, classes, False)),
            ("(1) full fine-tuning", lambda: compare_runs(work / "subset-full", work / "r1f", sizes, args.device, classes, True)),
            ("(2) sweep", lambda: compare_sweeps(work / "subset-sweep", work / "r2", sizes, args.device, classes)),
            ("(3) feature pass", lambda: compare_feature_pass(work / "subset", work / "r3", sizes, args.device, classes)),
            ("(3) feature pass, convnext_tiny", lambda: compare_feature_pass(work / "subset", work / "r3c", sizes, args.device, classes, "convnext_tiny")),
            ("(4) training step", lambda: compare_steps(steps_folder, work / "r4", sizes, args.device, classes)),
            ("(5) cache-hit job", lambda: cache_hit_job(work / "subset-sweep", work / "r5", sizes, args.device)),
            ("(6) recipe step", lambda: compare_recipe_steps(steps_folder, work / "r6", sizes, args.device, classes)),
            ("(7) select probe stage", lambda: compare_select_probe(work / "subset", work / "r7", sizes, args.device, classes)),
        ):  # fmt: skip
            if label[1] not in args.rows:
                continue
            step_started = time.perf_counter()
            row = measure()
            row, profile = row if isinstance(row, tuple) else (row, profile)
            rows.append(row)
            print(f"{label}: done in {time.perf_counter() - step_started:.0f}s", file=sys.stderr, flush=True)
    report = render(rows, machine(), sizes, data, args.device, time.perf_counter() - started, profile)
    print(report)
    output = Path(args.output)
    earlier = output.read_text() if output.is_file() else ""
    starts = [earlier.index(heading) for heading in KEPT_HEADINGS if heading in earlier]
    kept = earlier[min(starts) :] if starts else ""  # the hand-written sections (make gpu-check's table) stay
    output.write_text("# Benchmarks (`make bench`)\n\n" + report + (f"\n{kept}" if kept else ""))
    print(f"Written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
