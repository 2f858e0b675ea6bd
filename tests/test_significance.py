"""The statistics of select and of sweeps over seeds: bootstrap intervals, the paired test, the sentence."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_lightning.selection.significance import (
    accuracy_interval,
    comparison_sentence,
    mean_and_t_interval,
    paired_difference,
)

SAMPLES, SEED = 2000, 0


def correct_with_accuracy(accuracy: float, images: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(images) < accuracy


def test_interval_of_one_run_matches_the_normal_approximation_over_images() -> None:
    correct = correct_with_accuracy(0.8, 2000, seed=1)
    interval = accuracy_interval(correct, SAMPLES, SEED)
    p = correct.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / len(correct))  # the textbook binomial interval
    assert interval.mean == pytest.approx(p)
    assert interval.low == pytest.approx(p - half, abs=0.004) and interval.high == pytest.approx(p + half, abs=0.004)


def test_interval_is_reproducible_with_its_seed_and_widens_with_fewer_images() -> None:
    correct = correct_with_accuracy(0.7, 400, seed=2)
    assert accuracy_interval(correct, SAMPLES, SEED) == accuracy_interval(correct, SAMPLES, SEED)
    wide = accuracy_interval(correct[:100], SAMPLES, SEED)
    narrow = accuracy_interval(correct, SAMPLES, SEED)
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)


def test_seeds_that_disagree_widen_the_interval_over_images_alone() -> None:
    """Two seeds at 60% and 90% on the same images: the seed is a source of chance the interval must show."""
    images = 1000
    runs = np.stack([correct_with_accuracy(0.6, images, 3), correct_with_accuracy(0.9, images, 4)])
    both = accuracy_interval(runs, SAMPLES, SEED)
    pooled_images_only = accuracy_interval(runs.mean(axis=0) > 0.5, SAMPLES, SEED)
    assert both.mean == pytest.approx(runs.mean())
    assert both.high - both.low > 3 * (pooled_images_only.high - pooled_images_only.low)
    assert both.low < 0.65 and both.high > 0.85  # the seeds' spread


def test_paired_difference_matches_the_normal_approximation_of_per_image_differences() -> None:
    first = correct_with_accuracy(0.75, 3000, seed=5)
    second = first.copy()
    flip = np.random.default_rng(6).random(3000) < 0.1  # the second model differs on 10% of the images
    second[flip] = ~second[flip]
    comparison = paired_difference(first, second, SAMPLES, SEED)
    differences = first.astype(float) - second.astype(float)
    half = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    assert comparison.difference == pytest.approx(differences.mean())
    assert comparison.low == pytest.approx(differences.mean() - half, abs=0.003)
    assert comparison.high == pytest.approx(differences.mean() + half, abs=0.003)


def test_pairing_finds_a_margin_an_unpaired_comparison_would_call_a_tie() -> None:
    """Two models that err on almost the same images: 2 points apart on 1,000 images is significant paired."""
    images = 1000
    second = correct_with_accuracy(0.70, images, seed=7)
    first = second.copy()
    wrong = np.flatnonzero(~first)
    first[wrong[:20]] = True  # right on 20 more images, the same otherwise
    comparison = paired_difference(first, second, SAMPLES, SEED)
    assert comparison.difference == pytest.approx(0.02)
    assert comparison.significant and comparison.low > 0 and comparison.p_value < 0.01
    a, b = accuracy_interval(first, SAMPLES, SEED), accuracy_interval(second, SAMPLES, SEED)
    assert a.low < b.high  # the two intervals overlap: unpaired, no verdict


def test_identical_models_are_tied() -> None:
    runs = np.stack([correct_with_accuracy(0.8, 500, seed) for seed in (8, 9)])
    comparison = paired_difference(runs, runs.copy(), SAMPLES, SEED)
    assert comparison.difference == 0 and not comparison.significant and comparison.p_value == 1.0


def test_paired_test_refuses_different_images() -> None:
    with pytest.raises(ValueError, match="same images"):
        paired_difference(np.ones(10), np.ones(11), SAMPLES, SEED)


def test_t_interval_over_three_seeds_is_students() -> None:
    interval = mean_and_t_interval([0.80, 0.82, 0.84])
    half = 4.303 * 0.02 / np.sqrt(3)  # t(0.975, 2 degrees of freedom) x s / sqrt(n)
    assert interval.mean == pytest.approx(0.82)
    assert interval.low == pytest.approx(0.82 - half) and interval.high == pytest.approx(0.82 + half)
    assert mean_and_t_interval([0.5]).low == 0.5


def test_sentences_say_who_wins_by_how_much_and_whether_it_is_significant() -> None:
    second = correct_with_accuracy(0.6, 2000, seed=10)
    better = second | (np.random.default_rng(11).random(2000) < 0.3)
    won = comparison_sentence("A", "B", paired_difference(better, second, SAMPLES, SEED), 2000, (3, 3), "first by val")
    assert won.startswith("A (first by val) beats B on the test set (+")
    assert "paired bootstrap over the same 2,000 test images, 3 and 3 seeds, p < 0.0005" in won
    assert won.endswith("the margin is significant at the 5% level.")
    tie = comparison_sentence("A", "B", paired_difference(second, second, SAMPLES, SEED), 2000, (1, 1), "first by val")
    assert "does not beat B significantly" in tie and "1 and 1 seed," in tie and "p = 1" in tie
    lost = comparison_sentence("A", "B", paired_difference(second, better, SAMPLES, SEED), 2000, (2, 2), "first by val")
    assert "is worse than B on the test set (-" in lost and "validation ranking did not hold" in lost
