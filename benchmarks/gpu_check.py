"""``make gpu-check`` (``benchmarks/gpu_check.sh``): the speed half of the GPU check, one table and its JSON.

Runs on the lent GPU machine (one H100/H200, no internet) in a few minutes, on a real CIFAR-10 subset
carried as one uint8 array (``--prepare`` writes it here, with the wheels the machine lacks), and on
synthetic uint8 images of the same shape where a full 60,000-image pass is timed:

(a) a full fine-tuning step through Lightning vs a bare step on GPU-resident tensors (target >= 0.9);
(b) a whole training epoch over the in-memory uint8 set, resized on the GPU, vs (a)'s bare step
    ceiling (target >= 0.85), with the book loop's per-image PIL pipeline measured the same way;
(c) training throughput in images/s without and with ``compile=true`` (goal >= 7,000 images/s on one H100);
(d) the book's feature-extraction sweep, 4 learning rates x 5 epochs over 50,000 + 10,000 images at
    224 px, one feature cache shared by the four jobs: wall time (goal < 60 s on one H100);
(e) the frozen pass that fills the feature cache vs a bare inference forward (target >= 0.9).

resnet18 at 224 px, bf16 autocast on CUDA, channels_last, batch 256. A missed target writes a
``torch.profiler`` table of that measurement beside the results. ``--device cpu --tiny`` runs every
path on generated images in seconds (the test suite does, so this script cannot rot between GPU
sessions). The correctness half is ``pytest -m gpu`` (``tests/test_gpu.py``), run by the shell script.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench import (  # noqa: E402  (benchmarks/bench.py: the CPU benchmark's shared pieces)
    CIFAR_JPEG,
    ROOT,
    StepTimes,
    autocast,
    bare_forward_ips,
    bare_model,
    bare_step_ips,
    machine,
    preloaded_batches,
    synchronize,
)
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms  # noqa: E402

from transfer_lightning.cache import use_feature_cache  # noqa: E402
from transfer_lightning.data.base import ClassificationDataModule, Splits, TensorImageDataset  # noqa: E402
from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from transfer_lightning.recipes.ema import ema_callbacks  # noqa: E402
from transfer_lightning.run.builders import build_callbacks, build_logger, build_trainer, classifier_for  # noqa: E402
from transfer_lightning.run.speed import tune_for_device  # noqa: E402
from transfer_lightning.train import train  # noqa: E402
from transfer_lightning.utils.config_folder import config_folder  # noqa: E402

DEFAULT_DATA = ROOT / ".gpudata" / "cifar10-subset.npz"
SUBSET_IMAGES = 20_000  # 61 MB as uint8: fits the device tool's 64 MiB working tree with the wheels
WHEELS = ("hydra-core==1.3.8", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3")  # as in the tested venv
KORNIA_WHEELS = ("kornia==0.9.0", "kornia-rs==0.2.0")  # data.augment (recipes/augment.py); kornia-rs is compiled


@dataclass
class Sizes:
    image_size: int = 224
    batch_size: int = 256
    warmup_steps: int = 5  # cuDNN autotuning and allocator growth happen in the first steps
    step_batches: int = 30  # (a)
    epoch_images: int = SUBSET_IMAGES  # (b), (c): one epoch over the real subset
    pil_batches: int = 20  # (b): the book's PIL pipeline
    sweep_train: int = 50_000  # (d): 45,000 train + 5,000 val, + 10,000 test
    sweep_test: int = 10_000
    sweep_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    sweep_epochs: int = 5
    pass_images: int = 10_240  # (e)


TINY = Sizes(
    image_size=32, batch_size=8, warmup_steps=1, step_batches=3, epoch_images=48, pil_batches=2,
    sweep_train=40, sweep_test=8, sweep_lrs=(1e-3, 3e-3), sweep_epochs=2, pass_images=32,
)  # fmt: skip


# what a recipe sets on the data module (conf/recipe/timm.yaml): its augmentation and mixup
RECIPE_DATA_KEYS = ("augment", "train_crop", "crop_scale", "color_jitter", "randaugment_ops", "randaugment_magnitude",
                    "mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob", "mixup_mode")  # fmt: skip


@dataclass
class Result:
    name: str
    value: float
    unit: str
    target: str
    met: bool | None  # None: no target, only a number
    notes: str = ""


# -- data ------------------------------------------------------------------------------------
def prepare(data: Path, wheels: Path, source: Path, count: int) -> None:
    """Here, before a GPU session: the CIFAR-10 subset as one uint8 array, and the wheels the GPU machine lacks."""
    import subprocess

    from transfer_lightning.data.decode import open_rgb

    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    per_class = count // len(classes)
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((source / "train" / name).iterdir())[:per_class]:
            images.append(np.asarray(open_rgb(path), dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    data.parent.mkdir(parents=True, exist_ok=True)
    np.savez(data, images=np.stack(images), labels=np.asarray(labels, dtype=np.int64), classes=np.asarray(classes))
    print(f"{data}: {len(images)} images, {data.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", "--platform", "any", "-d", str(wheels), *WHEELS[:2]], check=True)  # fmt: skip
    # antlr4 4.9.3 (what omegaconf 2.3 needs) is published as source only: build its pure-Python wheel here
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), WHEELS[2]], check=True)
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", "--platform", "manylinux_2_17_x86_64", "-d", str(wheels), *KORNIA_WHEELS], check=True)  # fmt: skip


def load_arrays(path: Path | None, count: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The carried subset (``path``), or ``count`` generated images with class colours (``path=None``)."""
    if path is not None:
        with np.load(path) as arrays:
            images, labels = torch.from_numpy(arrays["images"][:count]), torch.from_numpy(arrays["labels"][:count])
            return images, labels, [str(name) for name in arrays["classes"]]
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 10
    colours = torch.rand(10, 3, 1, 1, generator=generator)
    noise = torch.rand(count, 3, size, size, generator=generator)
    images = (0.6 * colours[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
    return images, labels, [f"class_{i}" for i in range(10)]


class ArrayDataModule(ClassificationDataModule):
    """In-memory uint8 images (train = all of them, val/test = a small tail) served like any data module."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], **common) -> None:
        super().__init__(**common)
        self.arrays = (images, labels, classes)

    def load_splits(self) -> Splits:
        images, labels, classes = self.arrays
        tail = max(len(labels) // 20, self.batch_size)
        train = TensorImageDataset(images, labels)
        held = TensorImageDataset(images[-tail:], labels[-tail:])
        return Splits(train=train, val=held, test=held, class_names=classes, notes={"layout": "array"})


class PilDataset(Dataset):
    """The book's input pipeline: one PIL image per item, ``Resize`` + ``ToTensor`` + ``Normalize``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return self.transform(image), int(self.labels[index])


# -- the framework, built as train.py builds it ------------------------------------------------
def config(work: Path, device: str, sizes: Sizes, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_folder()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.root_dir={ROOT}",
                f"paths.output_dir={work / 'run'}",
                f"paths.data_dir={work / 'data'}",
                "data=synthetic",
                f"data.image_size={sizes.image_size}",
                f"data.batch_size={sizes.batch_size}",
                "model.weights=null",
                f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "~callbacks.progress_bar",
                *overrides,
            ],
        )


def fit_steps(cfg, datamodule: ClassificationDataModule, compile_net: bool = False) -> StepTimes:
    """Train through Lightning (the framework's module, callbacks and trainer) and time every step."""
    timer = StepTimes()
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule)
    callbacks = [*build_callbacks(cfg.get("callbacks"), progress_bar=False), *ema_callbacks(cfg.get("ema")), timer]
    trainer = build_trainer(cfg, callbacks, build_logger(cfg.get("logger")))
    tune_for_device(module, trainer, compile_net=compile_net)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(module, datamodule=datamodule)
    return timer


def steady_ips(timer: StepTimes, warmup: int) -> float:
    """Images/s over the steps after ``warmup`` (the first steps pay for autotuning and compilation)."""
    times, sizes = timer.times[warmup:], timer.sizes[warmup:]
    return sum(sizes[1:]) / (times[-1] - times[0])


def pil_step_ips(images, labels, classes: int, device: torch.device, sizes: Sizes) -> float:
    """The book's loop: a DataLoader of per-image PIL transforms feeding the same bare step."""
    workers = min(8, max(1, (os.cpu_count() or 2) - 1))
    loader = DataLoader(PilDataset(images, labels, sizes.image_size), batch_size=sizes.batch_size, shuffle=True,
                        num_workers=workers, pin_memory=device.type == "cuda")  # fmt: skip
    model = bare_model(classes, device, train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    seen, started = 0, None
    for index, (x, y) in enumerate(loader):
        if index == sizes.pil_batches + sizes.warmup_steps:
            break
        if index == sizes.warmup_steps:
            synchronize(device)
            started = time.perf_counter()
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        seen += len(y) if started is not None else 0
    synchronize(device)
    return seen / (time.perf_counter() - started)


def profile(function, path: Path, device: torch.device) -> None:
    """A ``torch.profiler`` table (top 25 ops by device time) of one call of ``function``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        function()
        synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=25))


# -- the measurements --------------------------------------------------------------------------
def measure(args: argparse.Namespace, sizes: Sizes, work: Path) -> list[Result]:
    device = torch.device(args.device)
    out = Path(args.out)
    data_path = None if args.tiny else Path(args.data)
    images, labels, classes = load_arrays(data_path, sizes.epoch_images)
    common = {"image_size": sizes.image_size, "batch_size": sizes.batch_size, "feature_cache": "false",
              "feature_cache_dir": str(work / "feature_cache")}  # fmt: skip
    results: list[Result] = []

    # (a) Lightning step vs bare step, both on the same resident data
    step_cfg = config(work / "a", args.device, sizes, "strategy=full", "optimizer=sgd", "trainer.max_epochs=1",
                      f"trainer.limit_train_batches={sizes.step_batches + sizes.warmup_steps}",
                      "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                      "~callbacks.early_stopping", "~callbacks.model_checkpoint")  # fmt: skip
    step_data = ArrayDataModule(images, labels, classes, **common)
    framework = steady_ips(fit_steps(step_cfg, step_data), sizes.warmup_steps)
    count = sizes.step_batches + sizes.warmup_steps
    batches = preloaded_batches(step_data, device, count)
    bare = bare_step_ips(batches, len(classes), device, sizes.warmup_steps)
    results.append(ratio_result("(a) full fine-tuning step through Lightning / bare step", framework, bare, 0.9,
                                f"{framework:.0f} vs {bare:.0f} images/s"))  # fmt: skip
    if not results[-1].met:
        profile(lambda: fit_steps(step_cfg, ArrayDataModule(images, labels, classes, **common)),
                out / "profile_a.txt", device)  # fmt: skip
    del batches

    # (b) + (c) a whole epoch over the uint8 set, resized on the device; then the same with compile
    epoch_cfg = config(work / "b", args.device, sizes, "strategy=full", "optimizer=sgd", "trainer.max_epochs=1",
                       "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                       "~callbacks.early_stopping", "~callbacks.model_checkpoint")  # fmt: skip
    epoch_ips = steady_ips(fit_steps(epoch_cfg, ArrayDataModule(images, labels, classes, **common)), sizes.warmup_steps)
    pil = pil_step_ips(images, labels, len(classes), device, sizes)
    results.append(ratio_result("(b) whole epoch from uint8, resized on the device / bare step", epoch_ips, bare, 0.85,
                                f"{epoch_ips:.0f} vs {bare:.0f} images/s; the book's PIL pipeline: {pil:.0f} images/s "
                                f"({pil / bare:.2f} of the bare step)"))  # fmt: skip
    if not results[-1].met:
        profile(lambda: fit_steps(epoch_cfg, ArrayDataModule(images, labels, classes, **common)),
                out / "profile_b.txt", device)  # fmt: skip
    goal = 7000 if device.type == "cuda" else None
    throughputs = [("(c) training throughput", epoch_ips)]
    if not args.tiny:  # compiling takes minutes on a CPU; the GPU run measures it
        compiled = fit_steps(epoch_cfg, ArrayDataModule(images, labels, classes, **common), compile_net=True)
        throughputs.append(("(c) training throughput, compile=true", steady_ips(compiled, sizes.warmup_steps)))
    for label, value in throughputs:
        results.append(Result(label, value, "images/s", ">= 7000 (one H100)" if goal else "-",
                              value >= goal if goal else None))  # fmt: skip

    # (d) the feature-extraction sweep on synthetic images of CIFAR-10's shape, one cache for all jobs
    started = time.perf_counter()
    hits = []
    for job, lr in enumerate(sizes.sweep_lrs):
        cfg = config(work / "d", args.device, sizes, "strategy=feature_extract", "optimizer=adam", f"optimizer.lr={lr}",
                     f"trainer.max_epochs={sizes.sweep_epochs}", "~callbacks.early_stopping", "data.num_classes=10",
                     f"data.train_size={sizes.sweep_train - sizes.sweep_train // 10}",
                     f"data.val_size={sizes.sweep_train // 10}", f"data.test_size={sizes.sweep_test}",
                     f"paths.output_dir={work / 'd' / f'job{job}'}")  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            hits.append(len(train(cfg)["feature_cache"]["hits"]))
    sweep_seconds = time.perf_counter() - started
    goal_s = 60 if device.type == "cuda" else None
    results.append(Result(f"(d) sweep {len(sizes.sweep_lrs)} lr x {sizes.sweep_epochs} epochs, "
                          f"{sizes.sweep_train:,} + {sizes.sweep_test:,} images", sweep_seconds, "s wall",
                          "< 60 (one H100)" if goal_s else "-", sweep_seconds < goal_s if goal_s else None,
                          f"cache hits per job: {hits}"))  # fmt: skip

    # (e) the frozen pass that fills the cache vs a bare inference forward
    pass_cfg = config(work / "e", args.device, sizes, "strategy=feature_extract")
    pass_data = ArrayDataModule(images[: sizes.pass_images], labels[: sizes.pass_images], classes,
                                **{**common, "feature_cache": "auto"})  # fmt: skip
    pass_data.setup("fit")
    module = classifier_for(pass_cfg, pass_data)
    trainer = build_trainer(pass_cfg, [], False)
    tune_for_device(module, trainer)
    report = use_feature_cache(pass_data, module, trainer)
    passed = sum(len(getattr(pass_data.splits, s)) for s in ("train", "val", "test"))
    framework_pass = passed / report.seconds
    bare_pass = bare_forward_ips(preloaded_batches(pass_data, device), len(classes), device)
    results.append(ratio_result("(e) feature-cache pass / bare inference forward", framework_pass, bare_pass, 0.9,
                                f"{framework_pass:.0f} vs {bare_pass:.0f} images/s; misses {report.misses}"))  # fmt: skip
    if not results[-1].met:
        profile(lambda: use_feature_cache(pass_data, classifier_for(pass_cfg, pass_data), trainer),
                out / "profile_e.txt", device)  # fmt: skip

    # (f) the recipe's pieces on the device: recipe=timm (RandAugment, mixup / CutMix, EMA) vs augment=none
    recipe_cfg = config(work / "f", args.device, sizes, "recipe=timm", "trainer.max_epochs=1",
                        f"trainer.limit_train_batches={sizes.step_batches + sizes.warmup_steps}",
                        "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                        "~callbacks.early_stopping", "~callbacks.model_checkpoint")  # fmt: skip
    recipe_data = {**common, **{key: OmegaConf.to_container(recipe_cfg.data)[key] for key in RECIPE_DATA_KEYS}}
    recipe = steady_ips(fit_steps(recipe_cfg, ArrayDataModule(images, labels, classes, **recipe_data)),
                        sizes.warmup_steps)  # fmt: skip
    results.append(ratio_result("(f) full fine-tuning step, recipe=timm / augment=none (a)", recipe, framework, 0.85,
                                f"{recipe:.0f} vs {framework:.0f} images/s: RandAugment + crop + flip (kornia, per "
                                "image, at the stored 32 px), mixup / CutMix (timm), EMA 0.9998"))  # fmt: skip
    if not results[-1].met:
        profile(lambda: fit_steps(recipe_cfg, ArrayDataModule(images, labels, classes, **recipe_data)),
                out / "profile_f.txt", device)  # fmt: skip
    return results


def ratio_result(name: str, framework: float, bare: float, target: float, notes: str) -> Result:
    ratio = framework / bare
    return Result(name, ratio, "ratio", f">= {target}", ratio >= target, notes)


def render(results: list[Result], info: dict[str, str], device: str, sizes: Sizes, seconds: float) -> str:
    lines = ["| measurement | value | target | met | notes |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        value = f"{r.value:.2f}" if r.unit == "ratio" else f"{r.value:,.1f} {r.unit}"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        lines.append(f"| {r.name} | {value} | {r.target} | {met} | {r.notes} |")
    described = "\n".join(f"- {key}: {value}" for key, value in info.items())
    return (f"Device `{device}`; resnet18, random init, {sizes.image_size} px, batch {sizes.batch_size}, "
            f"channels_last, bf16 autocast on CUDA; check wall time {seconds:.0f} s.\n\n"
            + "\n".join(lines) + f"\n\nMachine:\n{described}\n")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="every path on a few generated 32 px images (seconds)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the carried CIFAR-10 subset (.npz)")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"), help="folder for the table and JSON")
    parser.add_argument("--prepare", action="store_true", help="here: write --data and the wheels into .whl/")
    parser.add_argument("--source", default=str(CIFAR_JPEG), help="with --prepare: the CIFAR-10 class folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        if not (Path(args.source) / "train").is_dir():
            print(f"Error: {args.source} holds no train/<class>/ folders; pass --source", file=sys.stderr)
            return 2
        prepare(Path(args.data), ROOT / ".whl", Path(args.source), SUBSET_IMAGES)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("Error: --device cuda asked for, but torch sees no CUDA GPU here", file=sys.stderr)
        return 2
    if not args.tiny and not Path(args.data).is_file():
        print(f"Error: {args.data} is missing; run `make gpu-check-prepare` here first", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transfer_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.manual_seed(0)
    sizes = TINY if args.tiny else Sizes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tl-gpu-check-") as work:
        results = measure(args, sizes, Path(work))
    info = machine()
    if torch.cuda.is_available():
        info["driver / CUDA"] = f"CUDA {torch.version.cuda}, capability {torch.cuda.get_device_capability(0)}"
    table = render(results, info, args.device, sizes, time.perf_counter() - started)
    (out / "gpu_check.md").write_text("# GPU check (`make gpu-check`)\n\n" + table)
    (out / "gpu_check.json").write_text(
        json.dumps(
            {"device": args.device, "sizes": asdict(sizes), "machine": info, "results": [asdict(r) for r in results]},
            indent=2,
        )
        + "\n"  # fmt: skip
    )
    print(table)
    missed = [r.name for r in results if r.met is False]
    if missed:
        print(f"Targets missed: {'; '.join(missed)} (profiles in {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
