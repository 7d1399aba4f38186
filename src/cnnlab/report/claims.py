"""The lecture's claims, each tested on the study's runs: an effect, its 95% interval, a verdict.

Every effect is a difference paired by seed (both sides trained from the same seed), in
percentage points. Its interval is Student's t interval of the mean of those differences; the
claim holds when the whole interval is above zero, is contradicted when it is below, and is
inconclusive otherwise. One seed gives no interval: the verdict is then 'inconclusive (one
seed)', whatever the sign of the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
ONE_SEED = "inconclusive (one seed)"
NO_PAIR = "inconclusive (no finished pair)"

# optimization key of the study file -> how a claim names it
OPTIMIZATIONS = {
    "zscore": "z-score normalization",
    "augmentation": "data augmentation",
    "adaptive_lr": "an adaptive learning rate",
    "l1": "L1 regularization",
    "l2": "L2 regularization",
    "dropout": "dropout",
    "batch_norm": "batch normalization",
}
COLUMNS = ["claim", "model", "n_seeds", "effect_mean", "ci_low", "ci_high", "verdict"]


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float
    high: float


def paired_interval(differences, confidence: float = CONFIDENCE) -> Interval:
    """Mean of the paired differences and its two-sided t interval (NaN bounds below two pairs)."""
    d = np.asarray([x for x in differences if not math.isnan(x)], dtype=float)
    n = len(d)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half)


def verdict(interval: Interval) -> str:
    if interval.n == 0:
        return NO_PAIR
    if interval.n == 1:
        return ONE_SEED
    if interval.low > 0:
        return HOLDS
    if interval.high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] - b[seed] over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def claim_row(claim: str, model: str, differences: list[float], scale: float = 100.0) -> dict:
    """One row of claims.csv; differences are fractions, shown as percentage points."""
    iv = paired_interval([scale * d for d in differences])
    return {
        "claim": claim,
        "model": model,
        "n_seeds": iv.n,
        "effect_mean": iv.mean,
        "ci_low": iv.low,
        "ci_high": iv.high,
        "verdict": verdict(iv),
    }
