"""A sweep over seeds (``-m ... seed=1,2,3``): ``sweep_report`` gives each configuration its mean over the seeds
with a 95 % interval and compares the best two on the same test images, from the job folders alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transfer_lightning.run.test_predictions import write_test_predictions
from transfer_lightning.sweeps.results import REPORT_MD, collect_jobs, print_ranking, write_sweep_report
from transfer_lightning.sweeps.seeds import BOOTSTRAP, T_INTERVAL, seed_summary

IMAGES = 400
LABELS = np.arange(IMAGES) % 4


def job(sweep: Path, number: int, lr: str, seed: int, val_acc: float, right: float | None, test_acc: float = 0.0):
    """A finished job folder as a training job leaves it: its overrides, its summary and (when ``right`` is
    given) its per-image test results, the first ``right`` share of the images classified right."""
    folder = sweep / str(number)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
    if right is not None:
        predictions = LABELS.copy()
        wrong = np.random.default_rng(number).permutation(IMAGES)[: round((1 - right) * IMAGES)]
        predictions[wrong] = (predictions[wrong] + 1) % 4
        test_acc = float((predictions == LABELS).mean())
        write_test_predictions(folder, LABELS, predictions)
    summary = {"status": "completed", "best_val_acc": val_acc, "test_acc": test_acc, "epochs": 1}
    (folder / "run_summary.json").write_text(json.dumps(summary))


def test_each_configuration_gets_its_mean_over_seeds_and_the_best_two_are_compared(tmp_path, capsys) -> None:
    for number, (lr, seed) in enumerate((lr, seed) for lr in ("1e-3", "1e-4") for seed in (1, 2, 3)):
        good = lr == "1e-3"
        job(tmp_path, number, lr, seed, val_acc=(0.9 if good else 0.7) + seed / 100, right=0.9 if good else 0.6)
    summary = seed_summary(collect_jobs(tmp_path), ["optimizer.lr", "seed"])
    assert [c.label for c in summary.configurations] == ["optimizer.lr=1e-3", "optimizer.lr=1e-4"]
    best, second = summary.configurations
    assert best.method == BOOTSTRAP and len(best.completed) == 3
    assert best.val_mean == pytest.approx(0.92) and best.test.mean == pytest.approx(0.9)
    assert best.test.low < 0.9 < best.test.high and second.test.high < best.test.low
    assert summary.sentence.startswith("optimizer.lr=1e-3 (best mean val accuracy) beats optimizer.lr=1e-4")
    assert "over the same 400 test images, 3 and 3 seeds" in summary.sentence and "significant" in summary.sentence

    write_sweep_report(tmp_path)
    report = (tmp_path / REPORT_MD).read_text()
    assert "## Over seeds, best mean val accuracy first" in report and summary.sentence in report
    assert f"| `optimizer.lr=1e-3` | 3 of 3 | 92.00% | {best.test.text()} | {BOOTSTRAP} |" in report
    print_ranking(tmp_path)
    assert summary.sentence in capsys.readouterr().out


def test_runs_without_per_image_results_get_a_t_interval_and_no_paired_test(tmp_path) -> None:
    for number, seed in enumerate((1, 2)):
        job(tmp_path, number, "1e-3", seed, val_acc=0.8, right=None, test_acc=0.80 + seed / 100)
    job(tmp_path, 2, "1e-4", 1, val_acc=0.7, right=None, test_acc=0.7)
    summary = seed_summary(collect_jobs(tmp_path), ["optimizer.lr", "seed"])
    first = summary.configurations[0]
    assert first.method == T_INTERVAL and first.test.mean == pytest.approx(0.815)
    assert first.test.low == pytest.approx(0.815 - 12.706 * np.std([0.81, 0.82], ddof=1) / np.sqrt(2))
    assert summary.sentence.startswith("No paired test of optimizer.lr=1e-3 and optimizer.lr=1e-4")


def test_a_sweep_that_does_not_vary_the_seed_has_no_seed_section(tmp_path) -> None:
    job(tmp_path, 0, "1e-3", 1, val_acc=0.8, right=0.8)
    assert seed_summary(collect_jobs(tmp_path), ["optimizer.lr"]) is None
    write_sweep_report(tmp_path)
    assert "Over seeds" not in (tmp_path / REPORT_MD).read_text()


def test_the_answer_of_a_sweep_over_seeds_is_the_best_mean_not_the_luckiest_seed(tmp_path, capsys) -> None:
    steady, lucky = "1e-3", "1e-2"  # 80% on every seed; one seed at 95%, two at 50%
    for number, (lr, seed, val_acc) in enumerate(
        [(steady, seed, 0.8) for seed in (1, 2, 3)] + [(lucky, 1, 0.95), (lucky, 2, 0.5), (lucky, 3, 0.5)]
    ):
        job(tmp_path, number, lr, seed, val_acc=val_acc, right=val_acc)
    (tmp_path / "sweep_heatmap.png").write_bytes(b"an earlier report's plot")

    written = write_sweep_report(tmp_path)
    report = (tmp_path / REPORT_MD).read_text()
    command = f"python -m transfer_lightning -m optimizer.lr={steady} seed=1,2,3"
    assert f"## Best configuration: `optimizer.lr={steady}`, mean val acc 80.00% over 3 seeds" in report
    assert f"```bash\n{command}\n```" in report and "## Best: job" not in report
    assert "## Mean best val accuracy over seeds, by `optimizer.lr`" in report  # the plot is over the lr, not seed
    assert [path.name for path in written if path.suffix == ".png"] == ["sweep_line.png"]
    assert not (tmp_path / "sweep_heatmap.png").exists()  # no stale plot of another kind beside the report
    print_ranking(tmp_path)
    printed = capsys.readouterr().out
    assert f"Best configuration: optimizer.lr={steady}, mean val acc 80.00% over 3 seeds." in printed
    assert command in printed and "Winner: job 3" not in printed


def test_a_sweep_over_seeds_alone_names_its_one_configuration_by_the_command(tmp_path, capsys) -> None:
    for number, seed in enumerate((1, 2)):
        job(tmp_path, number, "1e-3", seed, val_acc=0.8, right=0.8)
    print_ranking(tmp_path)
    assert "Best configuration: the command's settings (only seed varies), mean val acc 80.00% over 2 seeds." in (
        capsys.readouterr().out
    )
