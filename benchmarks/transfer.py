"""``make bench-transfer``: what pretraining, each strategy and each recipe are worth on a real transfer task,
offline, on the CPU, with intervals over seeds.

No ImageNet weights can be fetched here, so the benchmark makes its own pretrained weights from
``../shared/data/cifar10-jpeg`` (all of CIFAR-10 as class folders):

- **source**: resnet18 from random init, every layer trained on 5 CIFAR-10 classes (airplane, automobile,
  bird, cat, deer); its run's ``best.ckpt`` is the pretrained backbone of every target run (a transfer chain,
  ``model.weights=<run>/checkpoints/best.ckpt``). It is trained once: a second benchmark finds it and reuses it.
- **target**: the other 5 classes (dog, frog, horse, ship, truck), ``--per-class`` training images each
  (default 100), ``--val-per-class`` more for validation (default 100, also drawn from CIFAR-10's train
  split, never from its test split), and CIFAR-10's whole test set of those classes (1,000 each).

Every cell is a Hydra multirun of the real command line (``python -m transfer_lightning -m ...
seed=1,2,3``), and its number is the framework's own over-seeds summary (``sweeps/seeds.py``): the mean test
accuracy with its 95 % interval, a bootstrap over the seeds and the 5,000 test images. The grid:

1. every strategy (feature_extract, finetune, full, gradual, lp_ft) with ``recipe=book``;
2. every recipe (book, fastai, timm) with the strategy of (1) with the best mean *validation* accuracy
   (a recipe's own strategy is replaced by that one, so only the recipe differs);
3. the baselines: full fine-tuning from random init, with ``recipe=book`` and with the recipe of (2) with the best
   mean validation accuracy, so the table shows what pretraining buys;
4. every recipe again with that strategy for ``--long-epochs`` (default 30): heavier regularisation (mixup,
   RandAugment, EMA) needs more epochs, so the recipes are also compared where they have them;
5. ``python -m transfer_lightning.select`` over {resnet18 from random init, resnet18 pretrained on the
   source}: its report (``select_report.md``) is linked from the table.

The paired test of each pair the table claims (pretrained vs random init, best recipe vs book) is on the same
test images. Everything lands in ``--work`` (default ``outputs/bench-transfer``); a killed benchmark
continues where it stopped (finished sweeps are read, not rerun; an unfinished one resumes with ``resume=``).
The table goes to ``BENCHMARKS.md`` (``--output``) under its own heading, with the machine it ran on.
``--tiny`` runs the whole protocol in a minute or two on generated images (the test suite's check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench import CIFAR_JPEG, ROOT, machine  # noqa: E402  (benchmarks/bench.py: the machine's description)
from PIL import Image  # noqa: E402

from transfer_lightning.config.schemas import StatsSchema  # noqa: E402
from transfer_lightning.run.summary import read_summary  # noqa: E402
from transfer_lightning.selection.significance import Comparison, comparison_sentence, paired_difference  # noqa: E402
from transfer_lightning.sweeps.results import collect_jobs, swept_keys  # noqa: E402
from transfer_lightning.sweeps.seeds import Configuration, seed_summary  # noqa: E402
from transfer_lightning.utils.files import atomic_write_text  # noqa: E402

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")
STRATEGIES = ("feature_extract", "finetune", "full", "gradual", "lp_ft")
RECIPES = ("book", "fastai", "timm")
HEADING = "## Offline transfer benchmark (`make bench-transfer`)"
TIMINGS = "timings.json"


@dataclass(frozen=True)
class Protocol:
    per_class: int = 100
    val_per_class: int = 100
    test_per_class: int | None = None  # None: every test image of the class
    source_per_class: int | None = None  # None: every train image of the class
    source_epochs: int = 8
    source_batch_size: int = 128
    epochs: int = 10
    long_epochs: int = 30  # (4): the recipes again with this many epochs; 0: not run
    seeds: int = 3
    image_size: int = 32
    batch_size: int = 32
    accelerator: str = "cpu"
    weights: str | None = None  # None: train the source; else every target run starts from these (e.g. DEFAULT)


TINY = Protocol(
    per_class=6,
    val_per_class=4,
    test_per_class=6,
    source_per_class=12,
    source_epochs=1,
    epochs=2,
    seeds=2,
    long_epochs=3,
)


# -- the folders --------------------------------------------------------------------------------------
def link_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        link = folder / file.name
        if not link.exists():
            link.symlink_to(file.resolve())


def images_of(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in {".jpg", ".jpeg", ".png"})


def prepare_folders(data: Path, work: Path, protocol: Protocol) -> tuple[Path, Path]:
    """The source and target data sets as class folders of links into ``data`` (train/ val/ test/ each)."""
    source, target = work / "data" / "source", work / "data" / "target"
    rng = np.random.default_rng(0)  # the same images for every benchmark of the same protocol
    for name in SOURCE_CLASSES:
        train = images_of(data / "train" / name)[: protocol.source_per_class]
        cut = len(train) // 10  # a tenth of the source's train images validate it
        link_files(train[cut:], source / "train" / name)
        link_files(train[:cut], source / "val" / name)
        link_files(images_of(data / "test" / name)[: protocol.test_per_class], source / "test" / name)
    for name in TARGET_CLASSES:
        train = images_of(data / "train" / name)
        drawn = [train[i] for i in rng.permutation(len(train))[: protocol.per_class + protocol.val_per_class]]
        link_files(drawn[: protocol.per_class], target / "train" / name)
        link_files(drawn[protocol.per_class :], target / "val" / name)
        link_files(images_of(data / "test" / name)[: protocol.test_per_class], target / "test" / name)
    return source, target


def generated_cifar(folder: Path, protocol: Protocol) -> Path:
    """``--tiny``: 32x32 JPEGs of the ten classes, each class its own colour, in CIFAR-10's folder layout."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(SOURCE_CLASSES + TARGET_CLASSES):
        colour = np.array([(index * 53) % 256, (index * 97) % 256, (index * 151) % 256])
        for split, count in (("train", 40), ("test", 10)):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for number in range(count):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / split / name / f"{number:04d}.jpg")
    return folder


# -- the runs -----------------------------------------------------------------------------------------
def common_overrides(work: Path, root: Path, protocol: Protocol) -> list[str]:
    return [
        f"trainer.accelerator={protocol.accelerator}",
        f"paths.data_dir={work / 'cache'}",
        "data=image_folder",
        f"data.root={root}",
        f"data.image_size={protocol.image_size}",
        f"data.resize_size={protocol.image_size}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


def run_cli(arguments: list[str], work: Path, stage: str) -> None:
    """``python -m transfer_lightning ...`` with ``arguments`` for one stage of the benchmark; its output goes to
    ``work/logs/<stage>.log``, its wall time to ``work/timings.json``; a failure stops the benchmark."""
    log = work / "logs" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"  python -m {' '.join(arguments)}  (log: {log})", file=sys.stderr, flush=True)
    with log.open("a") as output:
        finished = subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise SystemExit(f"bench-transfer: the command failed (exit {finished.returncode}); its log: {log}")
    seconds = time.perf_counter() - started
    timings = stage_timings(work)
    timings[stage] = timings.get(stage, 0.0) + seconds  # a resumed stage adds its second part
    atomic_write_text(work / TIMINGS, json.dumps(timings, indent=2) + "\n")
    print(f"  done in {seconds:.0f} s", file=sys.stderr, flush=True)


def stage_timings(work: Path) -> dict[str, float]:
    path = work / TIMINGS
    return json.loads(path.read_text()) if path.is_file() else {}


def claim_work_folder(work: Path, protocol: Protocol, data: Path) -> None:
    """``work`` holds one protocol's benchmark: a second run with the same protocol reuses it, another one stops."""
    stamp, wanted = work / "protocol.json", {**vars(protocol), "data": str(data)}
    if stamp.is_file() and json.loads(stamp.read_text()) != wanted:
        raise SystemExit(
            f"bench-transfer: {work} holds a benchmark of another protocol ({stamp}); pass --work <another folder> "
            "or remove that one"
        )
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(wanted, indent=2) + "\n")


def completed_run(folder: Path) -> bool:
    return (read_summary(folder) or {}).get("status") == "completed"


def train_source(work: Path, source: Path, protocol: Protocol) -> Path:
    """The pretrained weights: the source run's best checkpoint, trained only when no earlier run finished."""
    folder = work / f"source-{protocol.source_epochs}ep"
    if not completed_run(folder):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"Source: resnet18 from random init on {', '.join(SOURCE_CLASSES)}", file=sys.stderr)
        run_cli(
            [
                "transfer_lightning",
                *common_overrides(work, source, protocol),
                "model=resnet18",
                "model.weights=null",
                "strategy=full",
                f"data.batch_size={protocol.source_batch_size}",
                f"trainer.max_epochs={protocol.source_epochs}",
                "seed=0",
                f"hydra.run.dir={folder}",
            ],
            work,
            "source",
        )
    return folder / "checkpoints" / "best.ckpt"


def sweep(work: Path, name: str, overrides: list[str], protocol: Protocol) -> list[Configuration]:
    """One multirun over ``seed=1..seeds`` (and whatever ``overrides`` sweep); its over-seeds summary."""
    folder = work / name
    seeds = ",".join(str(seed) for seed in range(1, protocol.seeds + 1))
    jobs = collect_jobs(folder) if folder.is_dir() else []
    expected = protocol.seeds * np.prod([len(o.split("=", 1)[1].split(",")) for o in overrides if "," in o])
    if len(jobs) < expected or any(job.status != "completed" for job in jobs):
        print(f"Sweep {name}", file=sys.stderr)
        resume = [f"resume={folder}"] if jobs else []
        run_cli(
            ["transfer_lightning", "-m", *overrides, f"seed={seeds}", f"hydra.sweep.dir={folder}", *resume],
            work,
            name,
        )
        jobs = collect_jobs(folder)
    summary = seed_summary(jobs, swept_keys(jobs))
    return summary.configurations


def run_select(work: Path, target: Path, weights: Path, protocol: Protocol, strategy: str, recipe: str) -> Path:
    """select over {random init, pretrained}, each fine-tuned with the benchmark's best strategy and recipe."""
    folder = work / "select"
    if not (folder / "select_report.json").is_file():
        print("Select: resnet18 from random init vs pretrained on the source", file=sys.stderr)
        resume = [f"resume={folder}"] if folder.is_dir() else []
        run_cli(
            [
                "transfer_lightning.select",
                *common_overrides(work, target, protocol),
                f'candidates=["model=resnet18 model.weights=null","model=resnet18 model.weights={weights}"]',
                f"seeds={protocol.seeds}",
                f"finetune_overrides='recipe={recipe} strategy={strategy} trainer.max_epochs={protocol.epochs} "
                f"data.batch_size={protocol.batch_size}'",
                f"hydra.run.dir={folder}",
                *resume,
            ],
            work,
            "select",
        )
    return folder


# -- the table ----------------------------------------------------------------------------------------
@dataclass
class Row:
    weights: str  # "pretrained" | "random init"
    strategy: str
    recipe: str
    configuration: Configuration
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.weights} strategy={self.strategy} recipe={self.recipe} ({self.epochs} epochs)"

    @property
    def val_mean(self) -> float:
        return self.configuration.val_mean or 0.0

    @property
    def correct(self) -> np.ndarray:
        """seeds x test images: whether each run classified each image right."""
        return np.stack([result.correct for result in self.configuration.images])


def compare(first: Row, second: Row) -> Comparison:
    """``first``'s mean test accuracy minus ``second``'s, paired on the same test images (``selection/significance.py``)."""
    stats = StatsSchema()
    return paired_difference(first.correct, second.correct, stats.bootstrap_samples, stats.seed)


def sentence(first: Row, second: Row, why: str) -> str:
    correct = (first.correct, second.correct)
    return comparison_sentence(
        first.label, second.label, compare(first, second), correct[0].shape[1], (len(correct[0]), len(correct[1])), why
    )


def difference_text(comparison: Comparison) -> str:
    mark = " (significant)" if comparison.significant else ""
    return f"{100 * comparison.difference:+.2f} ({100 * comparison.low:+.2f} to {100 * comparison.high:+.2f}){mark}"


def render(rows: list[Row], findings: list[str], protocol: Protocol, timings: dict[str, float], data: Path) -> str:
    """The section of ``BENCHMARKS.md``: the protocol, the table, the findings, the machine."""
    random_init = {(row.recipe, row.epochs): row for row in rows if row.weights == "random init"}
    images = protocol.test_per_class or 1000
    also = f"the recipes also {protocol.long_epochs}; " if protocol.long_epochs else ""
    minutes = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in timings.items())
    lines = [
        HEADING,
        "",
        f"Source: resnet18 from random init, every layer trained {protocol.source_epochs} epochs (batch "
        f"{protocol.source_batch_size}, Adam 1e-3) on {', '.join(SOURCE_CLASSES)}, {{source}}. Target: "
        f"{', '.join(TARGET_CLASSES)}: {protocol.per_class} training and {protocol.val_per_class} validation images "
        f"per class (drawn from CIFAR-10's train split), {images:,} test images per class (its test split); "
        f"{protocol.image_size} px, batch {protocol.batch_size}, at most {protocol.epochs} epochs ({also}the default "
        f"early stopping, patience 3 on val accuracy, may stop a run sooner), seeds 1-{protocol.seeds}, "
        f"on the CPU. Data: `{data}`. Each cell is the mean test accuracy over the seeds with its 95% interval "
        "(bootstrap over the seeds and the test images, `sweeps/seeds.py`); the last column is the paired difference "
        "to random init with the same recipe and epochs on the same test images. Wall time per stage (min): "
        f"{minutes}. Run it: `make bench-transfer`.",
        "",
        "| weights | strategy | recipe | max epochs | mean best val acc | mean test acc (95% CI) | vs random init (full), same recipe: points (95% CI) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for row in rows:
        baseline = random_init.get((row.recipe, row.epochs))
        versus = difference_text(compare(row, baseline)) if baseline and row is not baseline else ""
        test = row.configuration.test.text() if row.configuration.test else "n/a"
        lines.append(
            f"| {row.weights} | {row.strategy} | {row.recipe} | {row.epochs} | {100 * row.val_mean:.2f}% | {test} | "
            f"{versus} |"
        )
    return "\n".join([*lines, "", *[f"- {finding}" for finding in findings], "", "Machine:", *machine_lines(), ""])


def findings(rows: list[Row], best_strategy: str, recipe_groups: list[list[Row]], select_folder: Path) -> list[str]:
    """What the table says: pretraining per strategy, the best recipe against the book's at each epoch count
    (``recipe_groups``: book first, then the presets, all with ``best_strategy``), select's verdict."""
    random_book = next(row for row in rows if row.weights == "random init" and row.recipe == "book")
    pretrained_book = [row for row in rows if row.weights == "pretrained" and row.recipe == "book"
                       and row.epochs == random_book.epochs]  # fmt: skip
    versus = {row.strategy: compare(row, random_book) for row in pretrained_book}
    losing = [strategy for strategy, comparison in versus.items()
              if not (comparison.significant and comparison.difference > 0)]  # fmt: skip
    said = [
        "Pretrained beats random init (strategy=full, recipe=book) significantly for every strategy."
        if not losing
        else f"Pretrained does not beat random init significantly with strategy {', '.join(losing)}.",
        f"Best strategy with recipe=book, by mean val accuracy: {best_strategy}.",
        *(recipe_finding(group, best_strategy) for group in recipe_groups),
    ]
    report = json.loads((select_folder / "select_report.json").read_text())
    said.append(f"`python -m transfer_lightning.select` over the two (`{select_folder / 'select_report.md'}`): "
                f"{report['sentence']}")  # fmt: skip
    return said


def recipe_finding(group: list[Row], strategy: str) -> str:
    """The recipe preset with the best mean val accuracy against recipe=book, same strategy and epochs."""
    book, best = group[0], max(group, key=lambda row: row.val_mean)
    if best is book:
        return f"No recipe preset beats recipe=book with strategy={strategy} and {book.epochs} epochs on mean val accuracy."
    half_widths = [(row.configuration.test.high - row.configuration.test.low) / 2 for row in (best, book)]
    difference = best.configuration.test.mean - book.configuration.test.mean
    return (
        f"Best recipe preset with {book.epochs} epochs, by mean val accuracy: recipe={best.recipe}, "
        f"{100 * difference:+.2f} points of mean test accuracy over recipe=book with strategy={strategy} and the same "
        f"epochs; the intervals' half-widths are {100 * half_widths[0]:.2f} and {100 * half_widths[1]:.2f} points, so "
        f"the margin is {'larger' if difference > max(half_widths) else 'not larger'} than both (the intervals "
        f"{'do not overlap' if difference > sum(half_widths) else 'overlap'}). "
        + sentence(best, book, "the best recipe preset by mean val accuracy")
    )


def machine_lines() -> list[str]:
    """``bench.py``'s description of the machine, as list items; the load average without its note on ratios."""
    described = {**machine(), "load average (1 min) at the end": f"{os.getloadavg()[0]:.1f}"}
    return [f"- {key}: {value}" for key, value in described.items()]


def write_section(output: Path, section: str) -> None:
    """Replace this benchmark's section of ``output`` (or add it before the GPU section), keeping the rest."""
    text = output.read_text() if output.is_file() else "# Benchmarks\n"
    if HEADING in text:
        start = text.index(HEADING)
        following = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("\n" + text[following + 1 :] if following >= 0 else "")
    elif "\n## GPU" in text:
        at = text.index("\n## GPU") + 1
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(output, text)


def source_result(weights: Path) -> str:
    """The source run in words: its test accuracy on the source classes and its training time."""
    summary = read_summary(weights.parents[1])  # a completed run: train_source checked it
    return (
        f"{100 * summary['test_acc']:.1f}% test accuracy on their {summary['test_images']:,} test images after "
        f"{summary['wall_time_s'] / 60:.1f} min"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CIFAR_JPEG, help="CIFAR-10 as class folders")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-transfer")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--tiny", action="store_true", help="generated images, every stage in a minute or two")
    parser.add_argument("--accelerator", help="trainer.accelerator of every run (default: cpu)")
    parser.add_argument(
        "--weights",
        help="skip the source: every pretrained run starts from these model.weights (DEFAULT: torchvision's ImageNet "
        "weights, with --image-size 224 --accelerator gpu)",
    )
    for name, default in vars(Protocol()).items():
        if isinstance(default, int) and not isinstance(default, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args(argv)
    protocol = TINY if args.tiny else Protocol()
    protocol = Protocol(**{**vars(protocol), **{k: v for k, v in vars(args).items() if k in vars(protocol) and v}})
    if args.tiny:
        args.data = generated_cifar(args.work / "generated", protocol)
    elif not (args.data / "train").is_dir():
        raise SystemExit(
            f"bench-transfer: {args.data} holds no CIFAR-10 class folders (train/<class>/, test/<class>/); pass "
            "--data /path/to/cifar10-jpeg (../shared/data/README.md), or --tiny for generated images"
        )
    work = args.work.resolve()
    claim_work_folder(work, protocol, args.data.resolve())
    source, target = prepare_folders(args.data.resolve(), work, protocol)
    weights = protocol.weights or train_source(work, source, protocol)
    common = [*common_overrides(work, target, protocol), f"data.batch_size={protocol.batch_size}"]
    base = [*common, f"trainer.max_epochs={protocol.epochs}"]
    pretrained = f"model.weights={weights}"

    by_strategy = sweep(work, "strategies", [*base, pretrained, "recipe=book", f"strategy={','.join(STRATEGIES)}"],
                        protocol)  # fmt: skip
    rows = [Row("pretrained", c.values["strategy"], "book", c, protocol.epochs) for c in by_strategy]
    best_strategy = max(rows, key=lambda row: row.val_mean).strategy
    recipes = sweep(work, "recipes", [*base, pretrained, "recipe=fastai,timm", f"strategy={best_strategy}"], protocol)
    book = next(row for row in rows if row.strategy == best_strategy)
    recipe_groups = [
        [book, *(Row("pretrained", best_strategy, c.values["recipe"], c, protocol.epochs) for c in recipes)]
    ]
    best_recipe = max(recipe_groups[0], key=lambda row: row.val_mean)
    random_recipes = sorted({"book", best_recipe.recipe})
    random = sweep(work, "random-init", [*base, "model.weights=null", "strategy=full",
                                         f"recipe={','.join(random_recipes)}"], protocol)  # fmt: skip
    random_rows = [Row("random init", "full", c.values.get("recipe", "book"), c, protocol.epochs) for c in random]
    if protocol.long_epochs:  # (4) the recipes where heavier regularisation has the epochs it needs
        long = sweep(work, f"recipes-{protocol.long_epochs}ep", [*common, f"trainer.max_epochs={protocol.long_epochs}",
                     pretrained, f"recipe={','.join(RECIPES)}", f"strategy={best_strategy}"], protocol)  # fmt: skip
        by_recipe = {c.values["recipe"]: c for c in long}
        recipe_groups.append([Row("pretrained", best_strategy, name, by_recipe[name], protocol.long_epochs)
                              for name in RECIPES])  # fmt: skip
    select = run_select(work, target, weights, protocol, best_strategy, best_recipe.recipe)

    table = [*rows, *recipe_groups[0][1:], *random_rows, *(row for group in recipe_groups[1:] for row in group)]
    section = render(
        table, findings(table, best_strategy, recipe_groups, select), protocol, stage_timings(work), args.data
    ).replace("{source}", source_result(weights) if protocol.weights is None else f"not used: model.weights={weights}")
    section = section.replace(f"{Path.cwd()}/", "")  # paths as a reader of the repository sees them
    print(section)
    write_section(args.output, section)
    print(f"Written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
