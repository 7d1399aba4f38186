"""The lecture's claims, each tested on the study's runs: an effect, its 95% interval, a verdict.

Every effect is a difference paired by seed (both sides trained from the same seed), in
percentage points; its interval is Student's t interval of the mean of those differences.

A claim has a smallest effect of interest, delta (the study's `report.smallest_effect_points`,
1 point by default): a difference smaller than delta does not matter, whatever its sign. Four
verdicts, read from the interval (95%, before adjustment):
  negligible    the interval lies inside (-delta, +delta): an equivalence test (two one-sided
                tests, TOST); this comes first, so a real but tiny gain is negligible, not a gain
  holds         the interval is above 0 (and not inside +-delta)
  contradicted  the interval is below 0 (and not inside +-delta)
  inconclusive  anything else.
One seed gives no interval: its verdict says that one seed decides nothing.

The family of claims. At 95% each, one false finding in twenty claims is expected by chance, so
the verdicts in claims.csv's `verdict` column are adjusted over the family of claims (every claim
with at least two seeds), once for the tests of a difference (holds or contradicted: H0 "no
difference", two-sided) and once for the equivalence tests (negligible: H0 "the effect is at
least delta"). The study's `report.adjustment` chooses how: `holm` (the default), Holm's
step-down procedure at a family-wise error of 5% each, so the chance that any claim is wrongly
said to hold or be contradicted is at most 5%, and so is the chance that any is wrongly said
negligible; or `fdr_bh`, Benjamini-Hochberg at a false-discovery rate of 5%. A p-value below 0.05
before adjustment is the same finding as the 95% interval's; `unadjusted_verdict` keeps that
reading beside the adjusted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import UserError

CONFIDENCE = 0.95
FAMILYWISE_ALPHA = 0.05  # Holm's family-wise error rate, per kind of finding
DEFAULT_DELTA = 1.0  # percentage points; a study sets its own with report.smallest_effect_points
HOLDS, CONTRADICTED, NEGLIGIBLE, INCONCLUSIVE = "holds", "contradicted", "negligible", "inconclusive"
ONE_SEED = "inconclusive: one seed decides nothing"
NO_PAIR = "inconclusive (no finished pair)"
TESTED = (HOLDS, CONTRADICTED, NEGLIGIBLE, INCONCLUSIVE)  # the verdicts of a claim with an interval

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
COLUMNS = [
    "claim", "model", "regime", "n_seeds", "effect_mean", "ci_low", "ci_high", "delta",
    "p_difference", "p_equivalence", "p_difference_adjusted", "p_equivalence_adjusted", "adjustment",
    "unadjusted_verdict", "verdict",
]


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float
    high: float
    se: float = math.nan  # standard error of the mean difference


def student_t():
    """scipy's t distribution, imported on first use: the Snakefile imports this module (through the
    report's registry) at every start, and scipy.stats takes most of a second to import."""
    from scipy.stats import t

    return t


def paired_interval(differences, confidence: float = CONFIDENCE) -> Interval:
    """Mean of the paired differences and its two-sided t interval (NaN bounds below two pairs)."""
    d = np.asarray([x for x in differences if not math.isnan(x)], dtype=float)
    n = len(d)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(student_t().ppf(0.5 + confidence / 2, n - 1) * se)
    return Interval(n, mean, mean - half, mean + half, se)


def p_difference(iv: Interval) -> float:
    """Two-sided p-value of "no difference" (paired t test); NaN below two pairs."""
    if iv.n < 2:
        return math.nan
    if iv.se == 0:  # every pair differs by the same amount
        return 0.0 if iv.mean != 0 else 1.0
    return float(2 * student_t().sf(abs(iv.mean) / iv.se, iv.n - 1))


def p_equivalence(iv: Interval, delta: float) -> float:
    """p-value of "the effect is at least delta in size" (TOST), doubled so that p < 0.05 is the
    95% interval lying inside (-delta, +delta); NaN below two pairs."""
    if iv.n < 2:
        return math.nan
    if iv.se == 0:
        return 0.0 if abs(iv.mean) < delta else 1.0
    below = student_t().sf((iv.mean + delta) / iv.se, iv.n - 1)  # H0: effect <= -delta
    above = student_t().cdf((iv.mean - delta) / iv.se, iv.n - 1)  # H0: effect >= +delta
    return float(min(1.0, 2 * max(below, above)))


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family).

    Sorted ascending, the k-th of m is multiplied by m - k + 1, and each adjusted value is at
    least the one before it; a hypothesis is rejected at family-wise level a when its value < a.
    """
    p = list(p_values)
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(tested)
    adjusted = [math.nan] * len(p)
    running = 0.0
    for k, (value, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * value))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values) -> list[float]:
    """Benjamini-Hochberg adjusted p-values, the false-discovery-rate method (NaN stays NaN).

    Sorted ascending, the k-th of m is multiplied by m / k, and each adjusted value is at most the
    one after it; rejecting those below q keeps the expected share of false findings at most q.
    """
    p = list(p_values)
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(tested)
    adjusted = [math.nan] * len(p)
    running = 1.0
    for k in range(m - 1, -1, -1):
        value, i = tested[k]
        running = min(running, m * value / (k + 1))
        adjusted[i] = running
    return adjusted


ADJUSTMENTS = {"holm": holm, "fdr_bh": benjamini_hochberg}
# How the report and the README name each adjustment, and the error rate it holds at FAMILYWISE_ALPHA.
ADJUSTMENT_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}
ADJUSTMENT_CONTROLS = {"holm": "family-wise error", "fdr_bh": "false-discovery rate"}


def verdict(n: int, mean: float, p_diff: float, p_equiv: float, alpha: float = FAMILYWISE_ALPHA) -> str:
    if n == 0:
        return NO_PAIR
    if n == 1:
        return ONE_SEED
    if p_equiv < alpha:
        return NEGLIGIBLE
    if p_diff < alpha:
        return HOLDS if mean > 0 else CONTRADICTED
    return INCONCLUSIVE


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] - b[seed] over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def claim_row(claim: str, model: str, differences: list[float], regime: str = "full",
              delta: float = DEFAULT_DELTA, scale: float = 100.0) -> dict:
    """One row of claims.csv before the family's adjustment (see `adjust`); differences are fractions,
    shown as percentage points."""
    iv = paired_interval([scale * d for d in differences])
    p_diff, p_equiv = p_difference(iv), p_equivalence(iv, delta)
    return {
        "claim": claim,
        "model": model,
        "regime": regime,
        "n_seeds": iv.n,
        "effect_mean": iv.mean,
        "ci_low": iv.low,
        "ci_high": iv.high,
        "delta": delta,
        "p_difference": p_diff,
        "p_equivalence": p_equiv,
        "p_difference_adjusted": p_diff,
        "p_equivalence_adjusted": p_equiv,
        "adjustment": "none",
        "unadjusted_verdict": verdict(iv.n, iv.mean, p_diff, p_equiv),
        "verdict": verdict(iv.n, iv.mean, p_diff, p_equiv),
    }


def adjust(rows: list[dict], method: str = "holm", alpha: float = FAMILYWISE_ALPHA) -> list[dict]:
    """The rows with adjusted p-values and verdicts, the family being every row with an interval."""
    if method not in ADJUSTMENTS:
        raise UserError(
            f"The study's report.adjustment is '{method}'; valid: {', '.join(ADJUSTMENTS)} (conf/study/<study>.yaml)."
        )
    diff = ADJUSTMENTS[method]([r["p_difference"] for r in rows])
    equiv = ADJUSTMENTS[method]([r["p_equivalence"] for r in rows])
    out = []
    for r, d, e in zip(rows, diff, equiv, strict=True):
        out.append({**r, "p_difference_adjusted": d, "p_equivalence_adjusted": e, "adjustment": method,
                    "verdict": verdict(r["n_seeds"], r["effect_mean"], d, e, alpha)})
    return out
