"""How sure a ranking is: bootstrap confidence intervals of accuracies and a paired test of two models.

Every number here comes from per-image results: ``correct[s, i]`` is whether the run with seed ``s``
classified image ``i`` right (``callbacks/test_predictions.py``). Two sources of chance make an
accuracy uncertain: which images the split happened to contain, and the seed of the run. Both are
resampled (a two-level, "hierarchical" bootstrap; Efron & Tibshirani 1993, ch. 16; for training seeds as a
source of variance: Bouthillier et al. 2021, "Accounting for Variance in Machine Learning Benchmarks"):

- ``accuracy_interval``: each replicate draws the seeds with replacement, then the images with
  replacement, and takes the mean accuracy; the 2.5th and 97.5th percentiles are the 95 % interval
  (percentile bootstrap). With one seed this is the plain bootstrap over images.
- ``paired_difference``: the same, for the difference of two models' mean accuracies, with the *same*
  image draw for both (paired: each image counts once for each model), their seeds drawn separately.
  The two-sided p-value is twice the share of replicates on the far side of zero (at least
  1 / replicates). The margin is significant at the 5 % level when the 95 % interval excludes zero.

A fixed seed (``stats.seed``) makes every report reproducible from the same run folders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
_CHUNK = 64  # replicates drawn at once (memory: chunk x images indices)


@dataclass(frozen=True)
class Interval:
    """A mean accuracy and its 95 % bootstrap interval."""

    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high}

    def text(self) -> str:
        """``85.00% (75.00-93.33)``."""
        return f"{100 * self.mean:.2f}% ({100 * self.low:.2f}-{100 * self.high:.2f})"


@dataclass(frozen=True)
class Comparison:
    """The difference of two models' mean accuracies (first minus second) on the same images."""

    difference: float
    low: float
    high: float
    p_value: float
    replicates: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "difference": self.difference,
            "ci_low": self.low,
            "ci_high": self.high,
            "p_value": self.p_value,
            "significant": self.significant,
        }


def accuracy_interval(correct: np.ndarray, samples: int, seed: int) -> Interval:
    """The mean accuracy of ``correct`` (seeds x images, or one row of images) and its 95 % interval."""
    correct = _as_matrix(correct)
    rng = np.random.default_rng(seed)
    replicates = _replicates(rng, [correct], samples, lambda means: means[0])
    low, high = _percentiles(replicates)
    return Interval(float(correct.mean()), low, high)


def paired_difference(first: np.ndarray, second: np.ndarray, samples: int, seed: int) -> Comparison:
    """``first``'s mean accuracy minus ``second``'s on the same images (each seeds x images), with its 95 %
    interval and two-sided p-value from the paired bootstrap."""
    first, second = _as_matrix(first), _as_matrix(second)
    if first.shape[1] != second.shape[1]:
        raise ValueError(f"a paired test needs the same images: {first.shape[1]} vs {second.shape[1]}")
    rng = np.random.default_rng(seed)
    replicates = _replicates(rng, [first, second], samples, lambda means: means[0] - means[1])
    low, high = _percentiles(replicates)
    far_side = min(np.mean(replicates <= 0), np.mean(replicates >= 0))
    p_value = float(min(1.0, max(2 * far_side, 1 / samples)))
    return Comparison(float(first.mean() - second.mean()), low, high, p_value, samples)


def mean_and_t_interval(values: list[float]) -> Interval:
    """The mean of a few numbers (one per seed) and Student's 95 % t-interval around it: the spread over
    seeds alone, for runs without per-image results. One value: the interval is the value itself."""
    from statistics import mean, stdev

    centre = mean(values)
    if len(values) < 2:
        return Interval(centre, centre, centre)
    half = _T_975[min(len(values) - 1, len(_T_975)) - 1] * stdev(values) / len(values) ** 0.5
    return Interval(centre, centre - half, centre + half)


# Student's t, 97.5th percentile, for 1..30 degrees of freedom (then ~1.96)
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def comparison_sentence(
    first: str, second: str, comparison: Comparison, images: int, seeds: tuple[int, int], chosen_by: str
) -> str:
    """One plain sentence: whether ``first`` beats ``second`` on the test images, by how much, how sure."""
    points = 100 * comparison.difference
    interval = f"{100 * comparison.low:+.2f} to {100 * comparison.high:+.2f}"
    p_value = f"p < {1 / comparison.replicates:.3g}" if comparison.p_value <= 1 / comparison.replicates else (
        f"p = {comparison.p_value:.2g}")  # fmt: skip
    evidence = (
        f"({points:+.2f} points, 95% CI {interval}; paired bootstrap over the same {images:,} test images, "
        f"{seeds[0]} and {seeds[1]} seed{'s' if max(seeds) > 1 else ''}, {p_value})"
    )
    if comparison.significant and points > 0:
        return f"{first} ({chosen_by}) beats {second} on the test set {evidence}: the margin is significant at the 5% level."
    if comparison.significant:
        return (
            f"{first} ({chosen_by}) is worse than {second} on the test set {evidence}: the margin is significant at the "
            f"5% level, so the validation ranking did not hold on the test images."
        )
    return (
        f"{first} ({chosen_by}) does not beat {second} significantly on the test set {evidence}: the two are tied "
        f"within what {images:,} test images and these seeds can tell apart."
    )


def _as_matrix(correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    return correct[None, :] if correct.ndim == 1 else correct


def _replicates(rng: np.random.Generator, models: list[np.ndarray], samples: int, statistic) -> np.ndarray:
    """``statistic`` of the models' mean accuracies over ``samples`` replicates, each drawing every model's
    seeds with replacement and one shared draw of the images with replacement."""
    images = models[0].shape[1]
    values = np.empty(samples)
    for start in range(0, samples, _CHUNK):
        count = min(_CHUNK, samples - start)
        seed_draws = [rng.integers(0, len(m), size=(count, len(m))) for m in models]
        image_draw = rng.integers(0, images, size=(count, images))
        means = []
        for model, draw in zip(models, seed_draws, strict=True):
            per_image = model[draw].mean(axis=1)  # (count, images): each replicate's seeds, averaged
            means.append(np.take_along_axis(per_image, image_draw, axis=1).mean(axis=1))
        values[start : start + count] = statistic(means)
    return values


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
