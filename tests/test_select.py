"""``python -m transfer_lightning.select`` end to end on tiny timm backbones and synthetic images: the report's
numbers are those of the probes and run folders it names, and a killed select continues where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, run_cli
from transfer_lightning.run.test_predictions import read_test_predictions

CANDIDATES = [
    "model=timm model.name=test_resnet model.weights=null",
    "model=timm model.name=test_convnext model.weights=null",
]
PROBE_FILES = ["00-timm-test_resnet-null.json", "01-timm-test_convnext-null.json"]
TINY_SELECT = [
    "data=synthetic", "data.native_size=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "probe.weight_decays=[0.01,1.0]", "probe.throughput_seconds=0.05",
    "stats.bootstrap_samples=200",
]  # fmt: skip
FINETUNE = ["top_k=2", "seeds=2", 'finetune_overrides="strategy=full trainer.max_epochs=1"']


def candidates(*texts: str) -> str:
    return "candidates=[" + ",".join(f'"{text}"' for text in texts) + "]"


def select(
    tmp_path: Path, *overrides: str, resume: bool = False, chosen: tuple[str, ...] = tuple(CANDIDATES), flags=()
):
    folder = tmp_path / "select"
    args = [
        *flags,
        *TINY_SELECT,
        candidates(*chosen),
        *overrides,
        f"hydra.run.dir={folder}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    # a select with fine-tunes (each a process of its own) takes minutes on a shared 2-core machine
    return run_cli(*args, *([f"resume={folder}"] if resume else []), module="transfer_lightning.select", timeout=900)


def report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "select" / "select_report.json").read_text())


def probe_record(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "select" / "probes" / name).read_text())


def test_probe_only_select_ranks_by_the_saved_probes_and_a_resume_redoes_only_the_missing_probe(tmp_path) -> None:
    first = select(tmp_path, "top_k=0")
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "select"
    assert {p.name for p in folder.iterdir()} >= {"select_report.json", "select_report.md", "select_pareto.png"}
    ranked = report(tmp_path)["candidates"]
    probes = {p["candidate"]: p for p in (probe_record(tmp_path, name) for name in PROBE_FILES)}
    assert [c["candidate"] for c in ranked] == sorted(
        CANDIDATES, key=lambda c: (-probes[c]["val_acc"], c != CANDIDATES[0])
    )
    for entry in ranked:
        saved = probes[entry["candidate"]]
        assert entry["probe"]["val_acc"] == saved["val_acc"] and entry["probe"]["val_ci"] == saved["val_ci"]
        assert (
            entry["parameters"] == saved["parameters"] > 0
            and entry["images_per_second"] == saved["images_per_second"] > 0
        )
        assert saved["val_ci"][0] <= saved["val_acc"] <= saved["val_ci"][1]
        assert saved["val_images"] == 32 and saved["train_images"] == 64  # data=synthetic's splits
        assert entry["finetune"]["finetuned"] is False
    assert "probe val acc (95% CI)" in first.stdout and "No paired test" in first.stdout  # the table and the sentence

    # a select killed during the probe of the second candidate: its record was never written
    kept = (folder / "probes" / PROBE_FILES[0]).stat().st_mtime_ns
    (folder / "probes" / PROBE_FILES[1]).unlink()
    resumed = select(tmp_path, "top_k=0", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (folder / "probes" / PROBE_FILES[0]).stat().st_mtime_ns == kept  # read, not recomputed
    assert (folder / "probes" / PROBE_FILES[1]).is_file()
    assert f"Probe of {CANDIDATES[0]}: read from probes" in resumed.stdout + resumed.stderr
    assert len(report(tmp_path)["candidates"]) == 2


def test_a_select_killed_during_a_probe_resumes_from_the_probes_it_saved_and_reports_again(tmp_path) -> None:
    folder, log = tmp_path / "select", tmp_path / "killed.log"
    # each probe measures its speed for 3 s, so the kill that follows the first probe's record lands in the second
    args = [*(item for item in TINY_SELECT if not item.startswith("probe.throughput_seconds=")),
            "probe.throughput_seconds=3", candidates(*CANDIDATES), "top_k=0", f"hydra.run.dir={folder}",
            f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    first, second = (folder / "probes" / name for name in PROBE_FILES)
    with log.open("w") as output:  # a file, not a pipe: a full pipe would stall the select
        process = subprocess.Popen([sys.executable, "-m", "transfer_lightning.select", *args], cwd=ROOT,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while not first.is_file():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first probe never finished"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # as a lost node would
        process.wait()
    kept = first.read_bytes()
    assert not second.exists() and not (folder / "select_report.json").exists()  # killed in the second probe

    resumed = run_cli(*args, f"resume={folder}", module="transfer_lightning.select", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert f"Probe of {CANDIDATES[0]}: read from probes" in said and f"Probe of {CANDIDATES[1]}: val acc" in said
    assert first.read_bytes() == kept and second.is_file()
    saved = report(tmp_path)
    assert [entry["probe"]["val_acc"] for entry in saved["candidates"]] == sorted(
        (probe_record(tmp_path, name)["val_acc"] for name in PROBE_FILES), reverse=True
    )

    # killed while writing its report: the report files are written atomically, so each is there whole or not at all
    probed = {name: (folder / "probes" / name).stat().st_mtime_ns for name in PROBE_FILES}
    for name in ("select_report.json", "select_report.md", "select_pareto.png"):
        (folder / name).unlink()
    again = run_cli(*args, f"resume={folder}", module="transfer_lightning.select", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (folder / "probes" / name).stat().st_mtime_ns for name in PROBE_FILES} == probed  # nothing probed
    assert report(tmp_path)["candidates"] == saved["candidates"]
    assert (folder / "select_report.md").is_file() and (folder / "select_pareto.png").is_file()


@pytest.mark.slow  # two fine-tuning multiruns of two seeds each (about 3 minutes on 2 CPU cores)
def test_select_fine_tunes_the_top_two_from_their_probes_and_reports_the_numbers_of_their_run_folders(tmp_path) -> None:
    import timm
    import torch

    weights = tmp_path / "test_resnet.pth"  # a "pretrained" network: its probe's head is where its fine-tune starts
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    chosen = (f"model=timm model.name=test_resnet model.weights={weights}", CANDIDATES[1])
    done = select(tmp_path, *FINETUNE, chosen=chosen)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = report(tmp_path)
    for entry in saved["candidates"]:
        runs = entry["finetune"]["runs"]
        assert [run["seed"] for run in runs] == [1, 2] and all(run["status"] == "completed" for run in runs)
        per_image = [read_test_predictions(Path(run["folder"])) for run in runs]
        summaries = [json.loads((Path(run["folder"]) / "run_summary.json").read_text()) for run in runs]
        assert [run["test_acc"] for run in runs] == [summary["test_acc"] for summary in summaries]
        assert [run["best_val_acc"] for run in runs] == [summary["best_val_acc"] for summary in summaries]
        for images, summary in zip(per_image, summaries, strict=True):
            assert images.accuracy == pytest.approx(summary["test_acc"], abs=1e-6)
        assert entry["finetune"]["test_acc"]["mean"] == pytest.approx(np.mean([i.accuracy for i in per_image]))
        launched = (Path(runs[0]["folder"]) / ".hydra" / "overrides.yaml").read_text()
        pretrained = entry["candidate"] == chosen[0]
        assert ("model.head_init=" in launched) == pretrained  # LP-FT; a random init has no probed network
    assert (done.stdout + done.stderr).count("Head: starts from the linear probe") == 2  # the pretrained one's seeds
    first, second = saved["candidates"][:2]
    assert first["finetune"]["val_acc_mean"] >= second["finetune"]["val_acc_mean"]
    assert saved["comparison"] is not None and saved["sentence"] in done.stdout
    assert saved["winner"]["command"].startswith("python -m transfer_lightning ")
    assert saved["winner"]["command"] in done.stdout

    resumed = select(tmp_path, *FINETUNE, chosen=chosen, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "nothing to run" in resumed.stdout + resumed.stderr  # finished fine-tunes are skipped
    assert report(tmp_path)["candidates"] == saved["candidates"]


def test_a_candidate_may_use_the_users_own_preset_from_config_dir_in_its_probe_and_its_fine_tunes(tmp_path) -> None:
    user_conf = tmp_path / "my_conf" / "experiment"
    user_conf.mkdir(parents=True)
    (user_conf / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  name: test_resnet\n  weights: null\noptimizer:\n  lr: 0.0123\n"
    )
    chosen = ("model=timm experiment=mine", CANDIDATES[1])
    unknown = select(tmp_path, "top_k=0", chosen=chosen)  # without the folder: one sentence, nothing run
    assert unknown.returncode == 2 and "experiment=mine is not an option of experiment" in unknown.stderr
    done = select(tmp_path, "top_k=2", "seeds=1", 'finetune_overrides="strategy=full trainer.max_epochs=1"',
                  chosen=chosen, flags=("--config-dir", str(tmp_path / "my_conf")))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    entry = next(item for item in report(tmp_path)["candidates"] if item["candidate"] == chosen[0])
    assert entry["model"].startswith("test_resnet (timm)")  # the probe built the preset's model
    (run,) = entry["finetune"]["runs"]  # and its fine-tune ran with the preset's settings
    launched = yaml.safe_load((Path(run["folder"]) / ".hydra" / "config.yaml").read_text())
    assert run["status"] == "completed" and launched["optimizer"]["lr"] == 0.0123
    assert launched["model"]["name"] == "test_resnet"


def test_a_bad_candidate_is_one_sentence_before_anything_runs(tmp_path) -> None:
    unknown = select(tmp_path, chosen=("model=resnet18", "model=no_such_model"))
    assert unknown.returncode == 2 and unknown.stderr.startswith("Error: candidates[1] (model=no_such_model)")
    assert len(unknown.stderr.strip().splitlines()) == 1
    owned = select(tmp_path, chosen=("model=resnet18 seed=4",))
    assert owned.returncode == 2 and "sets seed, which select sets itself" in owned.stderr
    assert not (tmp_path / "select").exists()


@pytest.mark.slow  # a fine-tuning multirun killed after its first seed, then resumed (about 2 minutes on 2 CPU cores)
def test_a_select_killed_during_its_fine_tunes_resumes_without_redoing_the_finished_seed(tmp_path) -> None:
    folder, log = tmp_path / "select", tmp_path / "killed.log"
    overrides = ["top_k=1", "seeds=2", 'finetune_overrides="strategy=full trainer.max_epochs=1"']
    args = [*TINY_SELECT, candidates(*CANDIDATES), *overrides, f"hydra.run.dir={folder}",
            f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    with log.open("w") as output:  # a file, not a pipe: a full pipe would stall the select
        process = subprocess.Popen([sys.executable, "-m", "transfer_lightning.select", *args], cwd=ROOT,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        first_seed = None
        deadline = time.monotonic() + 600
        while first_seed is None:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first fine-tune never finished"
            first_seed = next(iter(sorted((folder / "finetune").glob("*/0/run_summary.json"))), None)
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # the select and its fine-tuning multirun, as a lost node would
        process.wait()
    finished = first_seed.read_bytes()
    assert not (folder / "select_report.json").exists()

    resumed = select(tmp_path, *overrides, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert "read from probes" in said and ": seeds 2 in " in said  # only the seed that had not finished
    assert first_seed.read_bytes() == finished
    runs = report(tmp_path)["candidates"][0]["finetune"]["runs"]
    assert [(run["seed"], run["status"]) for run in runs] == [(1, "completed"), (2, "completed")]
