"""Seeded fuzzing of every reader of a file someone else wrote: hundreds of damaged copies of a real
checkpoint, run folder and sweep folder, each answered with one ``UserError`` sentence or a sound
result, never a traceback and never a file written outside the reader's own output folder.

The copies are made by ``mutate``: a value of the wrong type, a deleted key, a huge or negative
number, a string where a dictionary belongs, a dictionary naming a class (``_target_``) at any depth,
or the file cut short. ``test_fuzz_count_is_the_one_the_docs_state`` keeps the count in docs/reliability.md true.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import ROOT, TINY, run_cli
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.models.lineage import read_run_weights
from transfer_lightning.run.checkpoint import checkpoint_origin, load_classifier
from transfer_lightning.run.resume import check_resume_command
from transfer_lightning.sweep_report import report as sweep_report
from transfer_lightning.sweeps.resume import find_previous_sweep
from transfer_lightning.utils.errors import UserError

SEED = 2026
CHECKPOINT_COPIES = 160
RUN_FOLDER_COPIES = 60
SWEEP_FOLDER_COPIES = 30
DOCS_COUNT = "250 damaged copies"
SWEPT = ["optimizer.lr=1e-2,1e-3"]


def payload(canary: Path) -> dict[str, Any]:
    return {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(canary)]},
            "data": "planted"}  # fmt: skip


def _replacements(canary: Path) -> list[tuple[str, Any]]:
    return [
        ("a huge number", 10**12),
        ("a negative number", -7),
        ("a negative float", -1.5),
        ("a string", "a string"),
        ("a list", [1, "two", None]),
        ("an empty dict", {}),
        ("null", None),
        ("true", True),
        ("a class to build", payload(canary)),
        ("a class two levels down", {"inner": {"deeper": payload(canary)}}),
    ]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path into nested dicts and lists (tensors are leaves)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def mutate(document: Any, rng: random.Random, canary: Path, focus: str | None = None) -> tuple[Any, str]:
    """A damaged deep copy of ``document`` and what was done to it; ``focus``: the key most damage goes
    under (a checkpoint's record, not its thousands of tensors)."""
    paths = list(_paths(document))
    focused = [path for path in paths if path[0] == focus]
    path = rng.choice(focused if focused and rng.random() < 0.8 else paths)
    damaged = parent = copy.copy(document)  # only the containers on the way down are copied, never a tensor
    for key in path[:-1]:
        parent[key] = copy.copy(parent[key])
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[path[-1]]
        return damaged, f"deleted {'.'.join(map(str, path))}"
    what, value = rng.choice(_replacements(canary))
    parent[path[-1]] = value
    return damaged, f"{'.'.join(map(str, path))} = {what}"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-job sweep folder written by the CLI; its job 0 is a real run folder (``run``)."""
    folder = tmp_path_factory.mktemp("fuzz")
    tiny = [*TINY, "model=timm", "model.name=test_resnet", "scheduler=cosine", f"paths.data_dir={folder / 'data'}"]
    sweep = run_cli("-m", *tiny, "optimizer.lr=1e-2,1e-3", f"hydra.sweep.dir={folder / 'multirun' / 'day' / 'time'}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (folder / "run").symlink_to(folder / "multirun" / "day" / "time" / "0")
    return folder


class Outcomes:
    """Every reader's answer to every copy; anything but a result or one sentence is a finding."""

    def __init__(self, canary: Path, watched: Path, allowed: list[Path]) -> None:
        self.canary, self.watched, self.allowed = canary, watched, allowed
        self.tried = 0
        self.findings: list[str] = []

    def answer(self, reader: str, what: str, call: Callable[[], Any], sound: Callable[[Any], bool]) -> None:
        self.tried += 1
        before = self._files()
        try:
            result = call()
        except UserError as error:
            if "\n" in str(error) or not str(error):
                self.findings.append(f"{reader} ({what}): not one sentence: {error!r}")
        except Exception as error:  # noqa: BLE001 - the finding itself
            self.findings.append(f"{reader} ({what}): {type(error).__name__}: {str(error)[:200]}")
        else:
            if not sound(result):
                self.findings.append(f"{reader} ({what}): an unsound result {result!r:.200}")
        if self.canary.exists():
            self.findings.append(f"{reader} ({what}): the planted class ran")
            self.canary.unlink()
        new = [p for p in self._files() - before if not any(p.is_relative_to(a) for a in self.allowed)]
        if new:
            self.findings.append(f"{reader} ({what}): wrote {sorted(map(str, new))[:3]}")

    def _files(self) -> set[Path]:
        return set(self.watched.rglob("*"))


def _is_classifier(module: Any) -> bool:
    return isinstance(module, TransferClassifier) and module.net is not None and len(module.class_names) >= 2


def test_damaged_checkpoints_run_folders_and_sweep_folders_get_one_sentence_or_a_sound_result(real_run, tmp_path,
                                                                                            capsys) -> None:  # fmt: skip
    rng = random.Random(SEED)
    canary = tmp_path / "canary.txt"
    work = tmp_path / "copies"
    work.mkdir()
    outcomes = Outcomes(canary, tmp_path, allowed=[work])

    original = torch.load(real_run / "run" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    good = real_run / "run" / "checkpoints" / "best.ckpt"
    for number in range(CHECKPOINT_COPIES):
        path = work / f"copy{number}.ckpt"
        if number % 12 == 0:  # cut short
            data = good.read_bytes()
            cut = rng.randrange(0, len(data))
            path.write_bytes(data[:cut])
            what = f"truncated to {cut} bytes"
        else:
            damaged, what = mutate(original, rng, canary, focus="transfer_lightning")
            torch.save(damaged, path)
        outcomes.answer("evaluate/predict/export", what, lambda p=path: load_classifier(p), _is_classifier)
        outcomes.answer("model.weights", what, lambda p=path: read_run_weights(str(p)), lambda run: run.state_dict)
        outcomes.answer("report title", what, lambda p=path: checkpoint_origin(p), lambda text: isinstance(text, str))

    config = yaml.safe_load((real_run / "run" / ".hydra" / "config.yaml").read_text())
    for number in range(RUN_FOLDER_COPIES):
        folder = work / f"run{number}"
        shutil.copytree(real_run / "run", folder, ignore=shutil.ignore_patterns("tensorboard"), copy_function=os.link)
        saved = folder / ".hydra" / "config.yaml"
        saved.unlink()
        shutil.copy(real_run / "run" / ".hydra" / "config.yaml", saved)
        if number % 10 == 0:
            text = saved.read_text()
            saved.write_text(text[: rng.randrange(0, len(text))])
            what = "config.yaml truncated"
        elif number % 10 == 1:
            damaged, what = mutate(original, rng, canary, focus="transfer_lightning")
            (folder / "checkpoints" / "last.ckpt").unlink()  # a hard link to the original: replace, never write through
            torch.save(damaged, folder / "checkpoints" / "last.ckpt")
            what = f"last.ckpt: {what}"
        else:
            damaged, what = mutate(config, rng, canary)
            saved.write_text(yaml.safe_dump(damaged))
        outcomes.answer("resume=<run folder>", what, lambda f=folder: check_resume_command([f"resume={f}"]),
                        lambda result: result is None)  # fmt: skip

    sweep = real_run / "multirun" / "day" / "time"
    files = sorted(
        p.relative_to(sweep)
        for p in sweep.rglob("*")
        if p.suffix in (".yaml", ".json") and "tensorboard" not in p.parts
    )
    for number in range(SWEEP_FOLDER_COPIES):
        folder = work / f"sweeps{number}" / "day" / "time"  # each the only sweep of its outputs/
        shutil.copytree(sweep, folder, ignore=shutil.ignore_patterns("tensorboard", "*.ckpt", "*.png"))
        target = folder / rng.choice(files)
        text = target.read_text()
        if number % 4 == 0:
            target.write_text(text[: rng.randrange(0, len(text))])
            what = f"{target.relative_to(folder)} truncated"
        else:
            document = yaml.safe_load(text)
            damaged, what = mutate(document, rng, canary) if document else ({"x": 1}, "empty")
            target.write_text(yaml.safe_dump(damaged))
            what = f"{target.relative_to(folder)}: {what}"
        outcomes.answer(
            "sweep_report", what, lambda f=folder: sweep_report(f), lambda files: all(p.is_file() for p in files)
        )
        outcomes.answer("sweep resume=true", what, lambda f=folder: find_previous_sweep(f.parent / "new", SWEPT),
                        lambda found: found is None or found.is_dir())  # fmt: skip

    capsys.readouterr()
    print(f"fuzz: {outcomes.tried} answers to {CHECKPOINT_COPIES + RUN_FOLDER_COPIES + SWEEP_FOLDER_COPIES} copies")
    assert outcomes.findings == [], "\n".join(outcomes.findings[:20])


def test_fuzz_count_is_the_one_the_docs_state() -> None:
    total = CHECKPOINT_COPIES + RUN_FOLDER_COPIES + SWEEP_FOLDER_COPIES
    assert f"{total} damaged copies" == DOCS_COUNT and DOCS_COUNT in (ROOT / "docs" / "reliability.md").read_text()
