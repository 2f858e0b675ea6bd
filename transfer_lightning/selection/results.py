"""Select's third stage, the numbers: every candidate's probe and fine-tuned runs, ranked, with their
confidence intervals and the paired test of the winner against the runner-up.

Everything is read back from the select folder (``probes/``, and each fine-tune's run folders:
``run_summary.json`` and ``test_predictions.npz``), so a report can be rebuilt at any time. Ranking:
the fine-tuned candidates by their mean best validation accuracy over the seeds (validation chooses,
the test set only measures), then the others by their probe's validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfer_lightning.config.schemas import StatsSchema
from transfer_lightning.run.summary import read_summary
from transfer_lightning.run.test_predictions import ImageResults, read_test_predictions
from transfer_lightning.selection.candidates import Candidate
from transfer_lightning.selection.probe import ProbeResult
from transfer_lightning.selection.significance import (
    Comparison,
    Interval,
    accuracy_interval,
    comparison_sentence,
    paired_difference,
)
from transfer_lightning.sweeps.results import collect_jobs

AGREEMENT = 1e-4  # per-image results and run_summary.json's test_acc (float32) agree this closely


@dataclass
class SeedRun:
    """One fine-tuning run (one seed) of a candidate, as its folder says."""

    seed: int
    folder: Path
    status: str
    best_val_acc: float | None
    test_acc: float | None
    epochs: int | None
    images: ImageResults | None
    test_split: str
    error: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "completed" and self.best_val_acc is not None


@dataclass
class CandidateResult:
    """A candidate's probe, its fine-tuned runs (none when not chosen), and their summary numbers."""

    candidate: Candidate
    probe: ProbeResult
    runs: list[SeedRun] = field(default_factory=list)
    finetuned: bool = False
    test: Interval | None = None  # the fine-tuned runs' test accuracy over seeds and images
    pareto: bool = False

    @property
    def completed(self) -> list[SeedRun]:
        return [run for run in self.runs if run.usable]

    @property
    def val_mean(self) -> float | None:
        values = [run.best_val_acc for run in self.completed]
        return float(np.mean(values)) if values else None

    def correct(self) -> np.ndarray | None:
        """seeds x test images: whether each completed run classified each image right (None when a run
        has no per-image results)."""
        runs = self.completed
        if not runs or any(run.images is None for run in runs):
            return None
        return np.stack([run.images.correct for run in runs])

    def best_run(self) -> SeedRun | None:
        return max(self.completed, key=lambda run: (run.best_val_acc, -run.seed), default=None)


@dataclass
class SelectResults:
    """The ranked candidates, the comparison of the first two fine-tuned ones and what the reader must know."""

    ranked: list[CandidateResult]
    comparison: Comparison | None
    sentence: str
    notes: list[str]

    @property
    def winner(self) -> CandidateResult | None:
        return self.ranked[0] if self.ranked else None


def collect_results(
    candidates: list[Candidate],
    probes: dict[int, ProbeResult],
    chosen: list[Candidate],
    finetune_dirs: dict[int, Path],
    stats: StatsSchema,
) -> SelectResults:
    """Read the runs, compute the intervals, rank, compare the first two."""
    notes: list[str] = []
    results = []
    for candidate in candidates:
        result = CandidateResult(candidate, probes[candidate.index])
        if candidate.index in finetune_dirs:
            result.finetuned = True
            result.runs = read_runs(finetune_dirs[candidate.index], notes)
            correct = result.correct()
            if correct is not None:
                result.test = accuracy_interval(correct, stats.bootstrap_samples, stats.seed)
            elif result.completed:
                notes.append(
                    f"{candidate.text}: a run has no per-image test results (test_predictions.npz): no interval"
                )
        results.append(result)
    ranked = rank(results)
    mark_pareto_front(ranked)
    comparison, sentence = compare_first_two(ranked, stats, notes)
    if any(run.test_split == "val" for result in ranked for run in result.completed):
        notes.append(
            "this data has no test split: the fine-tuned 'test' accuracies are measured on the val split, which also "
            "chose each run's best epoch (optimistic); give the data a test split (data.test_fraction=0.2)"
        )
    return SelectResults(ranked, comparison, sentence, notes)


def read_runs(sweep_dir: Path, notes: list[str]) -> list[SeedRun]:
    """The run of each seed in a candidate's fine-tune folder, checked against its own summary."""
    runs = []
    for job in collect_jobs(sweep_dir) if sweep_dir.is_dir() else []:
        seed = job.values.get("seed", "")
        raw = read_summary(job.folder) or {}
        images = read_test_predictions(job.folder) if job.status == "completed" else None
        test_acc = job.summary.get("test_acc")
        if images is not None and test_acc is not None and abs(images.accuracy - test_acc) > AGREEMENT:
            notes.append(
                f"{job.folder}: test_predictions.npz ({images.accuracy:.4f}) disagrees with run_summary.json's "
                f"test_acc ({test_acc:.4f}); its per-image results are not used"
            )
            images = None
        runs.append(
            SeedRun(
                seed=int(seed) if seed.isdigit() else -1,
                folder=job.folder,
                status=job.status,
                best_val_acc=job.best_val_acc,
                test_acc=test_acc,
                epochs=job.summary.get("epochs"),
                images=images,
                test_split=str(raw.get("test_split", "test")),
                error=str(job.summary.get("error", "")),
            )
        )
    return sorted(runs, key=lambda run: run.seed)


def rank(results: list[CandidateResult]) -> list[CandidateResult]:
    """Fine-tuned candidates with a completed run by mean best val accuracy, then the rest by probe val
    accuracy; ties keep the candidates' order."""
    tuned = [r for r in results if r.val_mean is not None]
    probed = [r for r in results if r.val_mean is None]
    tuned.sort(key=lambda r: (-r.val_mean, r.candidate.index))
    probed.sort(key=lambda r: (-r.probe.val_acc, r.candidate.index))
    return tuned + probed


def mark_pareto_front(results: list[CandidateResult]) -> None:
    """A candidate is on the front when no other is at least as fast and as accurate (probe val accuracy,
    measured the same way for all) and better in one of the two."""
    for result in results:
        speed, accuracy = result.probe.images_per_second, result.probe.val_acc
        result.pareto = not any(
            other.probe.images_per_second >= speed
            and other.probe.val_acc >= accuracy
            and (other.probe.images_per_second > speed or other.probe.val_acc > accuracy)
            for other in results
        )


def compare_first_two(
    ranked: list[CandidateResult], stats: StatsSchema, notes: list[str]
) -> tuple[Comparison | None, str]:
    """The paired test of the first two fine-tuned candidates on the same test images, and its sentence."""
    tuned = [r for r in ranked if r.val_mean is not None]
    if len(tuned) < 2:
        return None, (
            "No paired test: it needs two fine-tuned candidates with completed runs (top_k >= 2; runs that failed "
            "are listed below)."
        )
    first, second = tuned[:2]
    a, b = first.correct(), second.correct()
    if a is None or b is None:
        return None, "No paired test: a run of the first two has no per-image test results (test_predictions.npz)."
    labels = [run.images.labels for result in (first, second) for run in result.completed]
    if any(len(x) != len(labels[0]) or not np.array_equal(x, labels[0]) for x in labels):
        notes.append("the first two candidates' runs were tested on different images: they cannot be paired")
        return None, "No paired test: the first two candidates were not tested on the same images."
    comparison = paired_difference(a, b, stats.bootstrap_samples, stats.seed)
    sentence = comparison_sentence(
        first.candidate.text, second.candidate.text, comparison, len(labels[0]), (len(a), len(b)),
        "first by mean validation accuracy",
    )  # fmt: skip
    return comparison, sentence
