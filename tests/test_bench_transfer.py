"""``make bench-transfer`` (benchmarks/transfer.py): the target task it builds is the one it describes, its section of
BENCHMARKS.md replaces only itself, and (slow) its tiny mode runs every stage, then reuses them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "transfer.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_transfer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def names(folder) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_the_target_task_has_its_counts_no_image_twice_and_the_whole_test_split(tmp_path) -> None:
    bench = load_benchmark()
    protocol = bench.Protocol(per_class=5, val_per_class=3, source_per_class=20)
    data = bench.generated_cifar(tmp_path / "cifar", protocol)
    source, target = bench.prepare_folders(data, tmp_path / "work", protocol)

    assert sorted(names(source / "train")) == sorted(bench.SOURCE_CLASSES)
    assert sorted(names(target / "train")) == sorted(bench.TARGET_CLASSES)
    for name in bench.TARGET_CLASSES:
        train, val = names(target / "train" / name), names(target / "val" / name)
        assert len(train) == 5 and len(val) == 3 and not train & val
        assert names(target / "test" / name) == names(data / "test" / name), "the whole test split of the class"
        assert all((target / "train" / name / file).resolve().parent == data / "train" / name for file in train)
    for name in bench.SOURCE_CLASSES:
        train, val = names(source / "train" / name), names(source / "val" / name)
        assert len(train) + len(val) == 20 and len(val) == 2 and not train & val

    again = bench.prepare_folders(data, tmp_path / "again", protocol)[1]
    assert all(names(again / "train" / n) == names(target / "train" / n) for n in bench.TARGET_CLASSES), (
        "the same images for every benchmark of the same protocol"
    )


def test_its_section_replaces_only_itself_and_goes_before_the_gpu_table(tmp_path) -> None:
    bench = load_benchmark()
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(
        "# Benchmarks (`make bench`)\n\nthe bench's table\n\n## GPU (`make gpu-check`)\n\nthe GPU table\n"
    )

    bench.write_section(output, f"{bench.HEADING}\n\nfirst\n")
    bench.write_section(output, f"{bench.HEADING}\n\nsecond\n")

    text = output.read_text()
    assert "first" not in text and text.count(bench.HEADING) == 1
    assert text.index("the bench's table") < text.index("second") < text.index("## GPU") < text.index("the GPU table")


def test_without_cifar_it_says_where_to_get_it_and_exits_non_zero(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "absent"), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "holds no CIFAR-10 class folders" in result.stderr and "--tiny" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_mode_runs_every_stage_writes_the_table_and_a_second_run_reuses_them(tmp_path) -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--work",
        str(tmp_path / "work"),
        "--output",
        str(tmp_path / "B.md"),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (tmp_path / "B.md").read_text()
    for strategy in ("feature_extract", "finetune", "full", "gradual", "lp_ft"):
        assert f"| pretrained | {strategy} | book |" in table
    assert "| random init | full | book |" in table
    assert "| pretrained | " in table and "| fastai |" in table and "| timm |" in table
    assert "transfer_lightning.select` over the two" in table and "select_report.md" in table
    assert (tmp_path / "work" / "select" / "select_report.json").is_file()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "python -m transfer_lightning" not in second.stderr, "a finished stage is read, not rerun"
    assert (tmp_path / "B.md").read_text().count("| pretrained | ") == table.count("| pretrained | ")
