"""The lecture's claims, each tested on the study's runs: an effect, its interval, a verdict.

Every effect is a difference paired by seed (both sides trained from the same seed), in
percentage points; its interval is Student's t interval of the mean of those differences.

One rule reads a verdict from an interval and the smallest effect of interest, delta (the study's
`report.smallest_effect_points`). The interval establishes up to two facts: the effect's sign
(the interval lies above 0, or below it) and that the effect is small (it lies inside
(-delta, +delta): an equivalence test, TOST). The verdict names the facts established:

  holds                  above 0
  holds, under delta     above 0 and inside +-delta: real, but smaller than what matters
  negligible             inside +-delta, sign unknown
  contradicted, under delta  below 0 and inside +-delta
  contradicted           below 0
  inconclusive           neither: the seeds cannot tell a zero effect from one that matters.
One seed gives no interval: one seed decides nothing.

Adjusting for the family of claims (at 95% each, one false finding in twenty is expected by
chance) only ever widens a claim's interval, or equivalently raises the p-value of each of its
tests; so an adjusted verdict establishes a subset of the unadjusted verdict's facts, never a fact
the claim alone does not show (`weaker_or_equal`). The study's `report.adjustment` chooses how:

  fcr         false-coverage-rate adjusted intervals (Benjamini and Yekutieli 2005): the R of m
              claims that Benjamini-Hochberg selects at q = 5% on their tests of a difference; every
              claim's interval is then the (1 - R q / m) one (R = 0: 1 - q / m). Of the selected
              claims' intervals, at most 5% are expected to miss their effect.
  holm        Holm's step-down procedure over one family: every claim's test of a difference and
              its equivalence test together (2m tests), family-wise error 5%.
  fdr_bh      Benjamini-Hochberg over the same combined family, false-discovery rate 5%.
  bonferroni  every claim's interval at 1 - 0.05 / m: simultaneous coverage.
  none        each claim alone, at 95%.

A p-value below 0.05 is the same finding as the 95% interval's: p_difference is the two-sided
paired t test (the interval excludes 0), p_equivalence the doubled TOST p-value (the interval lies
inside +-delta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import UserError

CONFIDENCE = 0.95
FAMILYWISE_ALPHA = 0.05  # the error rate every adjustment holds (family-wise, false discovery or coverage)
DEFAULT_DELTA = 1.0  # percentage points; a study sets its own with report.smallest_effect_points
HOLDS, HOLDS_SMALL = "holds", "holds, under δ"
CONTRADICTED, CONTRADICTED_SMALL = "contradicted", "contradicted, under δ"
NEGLIGIBLE, INCONCLUSIVE = "negligible", "inconclusive"
ONE_SEED = "inconclusive: one seed decides nothing"
NO_PAIR = "inconclusive (no finished pair)"
# The verdicts of a claim with an interval.
TESTED = (HOLDS, HOLDS_SMALL, NEGLIGIBLE, CONTRADICTED_SMALL, CONTRADICTED, INCONCLUSIVE)
# The facts each verdict establishes: +, the effect is above 0; -, below 0; small, inside +-delta.
FACTS = {
    HOLDS: frozenset({"+"}),
    HOLDS_SMALL: frozenset({"+", "small"}),
    NEGLIGIBLE: frozenset({"small"}),
    CONTRADICTED_SMALL: frozenset({"-", "small"}),
    CONTRADICTED: frozenset({"-"}),
    INCONCLUSIVE: frozenset(),
    ONE_SEED: frozenset(),
    NO_PAIR: frozenset(),
}
VERDICT_OF = {facts: v for v, facts in FACTS.items() if v in TESTED}

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
    "p_difference", "p_equivalence", "adjustment", "confidence_adjusted", "ci_low_adjusted", "ci_high_adjusted",
    "p_difference_adjusted", "p_equivalence_adjusted", "unadjusted_verdict", "verdict", "holm_verdict",
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
    return widened(Interval(n, mean, mean, mean, se), confidence)


def widened(iv: Interval, confidence: float) -> Interval:
    """The same estimate's two-sided t interval at another confidence level."""
    if iv.n < 2:
        return iv
    half = float(student_t().ppf(0.5 + confidence / 2, iv.n - 1) * iv.se)
    return Interval(iv.n, iv.mean, iv.mean - half, iv.mean + half, iv.se)


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


def _combined(method):
    """A p-value adjustment applied to one family: every claim's two tests together."""
    def adjust_family(p_diff: list[float], p_equiv: list[float], alpha: float):
        both = method([*p_diff, *p_equiv])
        return both[:len(p_diff)], both[len(p_diff):], [math.nan] * len(p_diff)
    return adjust_family


def _scaled(factor_of):
    """An interval adjustment: every claim's interval at 1 - alpha / factor, i.e. its p-values times factor."""
    def adjust_family(p_diff: list[float], p_equiv: list[float], alpha: float):
        factor = factor_of(p_diff, alpha)
        scale = lambda p: p if math.isnan(p) else min(1.0, p * factor)  # noqa: E731
        return ([scale(p) for p in p_diff], [scale(p) for p in p_equiv],
                [1 - alpha / factor if not math.isnan(p) else math.nan for p in p_diff])
    return adjust_family


def _fcr_factor(p_diff: list[float], alpha: float) -> float:
    """m / R: R the claims Benjamini-Hochberg selects at alpha on their tests of a difference (at least 1)."""
    m = sum(not math.isnan(p) for p in p_diff)
    selected = sum(p < alpha for p in benjamini_hochberg(p_diff) if not math.isnan(p))
    return m / max(1, selected) if m else 1.0


def _bonferroni_factor(p_diff: list[float], alpha: float) -> float:
    return float(max(1, sum(not math.isnan(p) for p in p_diff)))


ADJUSTMENTS = {
    "fcr": _scaled(_fcr_factor),
    "holm": _combined(holm),
    "fdr_bh": _combined(benjamini_hochberg),
    "bonferroni": _scaled(_bonferroni_factor),
    "none": _scaled(lambda p_diff, alpha: 1.0),
}
# How the report and the README name each adjustment, and the error rate it holds at FAMILYWISE_ALPHA.
ADJUSTMENT_NAMES = {"fcr": "FCR-adjusted intervals", "holm": "Holm", "fdr_bh": "Benjamini-Hochberg",
                    "bonferroni": "Bonferroni", "none": "none"}
ADJUSTMENT_CONTROLS = {"fcr": "false-coverage rate", "holm": "family-wise error", "fdr_bh": "false-discovery rate",
                       "bonferroni": "family-wise error", "none": "per-claim error"}


def verdict_of(mean: float, p_diff: float, p_equiv: float, n: int, alpha: float = FAMILYWISE_ALPHA) -> str:
    """The one rule: the verdict names the facts whose tests pass at alpha."""
    if n == 0:
        return NO_PAIR
    if n == 1:
        return ONE_SEED
    facts = set()
    if p_diff < alpha:
        facts.add("+" if mean > 0 else "-")
    if p_equiv < alpha:
        facts.add("small")
    return VERDICT_OF[frozenset(facts)]


def interval_verdict(iv: Interval, delta: float) -> str:
    """The same rule read straight from an interval: what the report's interval column shows."""
    if iv.n < 2:
        return NO_PAIR if iv.n == 0 else ONE_SEED
    facts = {*(["+"] if iv.low > 0 else []), *(["-"] if iv.high < 0 else []),
             *(["small"] if -delta < iv.low and iv.high < delta else [])}
    return VERDICT_OF[frozenset(facts)]


def weaker_or_equal(adjusted: str, unadjusted: str) -> bool:
    """True when `adjusted` establishes no fact that `unadjusted` does not."""
    return FACTS[adjusted] <= FACTS[unadjusted]


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] - b[seed] over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def claim_row(claim: str, model: str, differences: list[float], regime: str = "full",
              delta: float = DEFAULT_DELTA, scale: float = 100.0) -> dict:
    """One row of claims.csv before the family's adjustment (see `adjust`); differences are fractions,
    shown as percentage points."""
    iv = paired_interval([scale * d for d in differences])
    p_diff, p_equiv = p_difference(iv), p_equivalence(iv, delta)
    unadjusted = verdict_of(iv.mean, p_diff, p_equiv, iv.n)
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
        "adjustment": "none",
        "confidence_adjusted": CONFIDENCE if iv.n >= 2 else math.nan,
        "ci_low_adjusted": iv.low,
        "ci_high_adjusted": iv.high,
        "p_difference_adjusted": p_diff,
        "p_equivalence_adjusted": p_equiv,
        "unadjusted_verdict": unadjusted,
        "verdict": unadjusted,
        "holm_verdict": unadjusted,
        "_se": iv.se,
    }


def check_adjustment(method: str) -> str:
    if method not in ADJUSTMENTS:
        raise UserError(
            f"The study's report.adjustment is '{method}'; valid: {', '.join(ADJUSTMENTS)} (conf/study/<study>.yaml)."
        )
    return method


def adjusted_verdicts(rows: list[dict], method: str, alpha: float = FAMILYWISE_ALPHA) -> list[tuple]:
    """(verdict, p_difference_adjusted, p_equivalence_adjusted, confidence) per row, the family being every
    row with an interval."""
    p_diff, p_equiv, conf = ADJUSTMENTS[check_adjustment(method)](
        [r["p_difference"] for r in rows], [r["p_equivalence"] for r in rows], alpha)
    return [(verdict_of(r["effect_mean"], d, e, r["n_seeds"], alpha), d, e, c)
            for r, d, e, c in zip(rows, p_diff, p_equiv, conf, strict=True)]


def adjust(rows: list[dict], method: str = "fcr", alpha: float = FAMILYWISE_ALPHA) -> list[dict]:
    """The rows with the chosen adjustment's p-values, interval and verdict, and Holm's verdict beside it."""
    chosen = adjusted_verdicts(rows, method, alpha)
    by_holm = adjusted_verdicts(rows, "holm", alpha)
    out = []
    for r, (v, d, e, conf), (hv, *_) in zip(rows, chosen, by_holm, strict=True):
        se = r.get("_se", math.nan)
        iv = Interval(r["n_seeds"], r["effect_mean"], r["ci_low"], r["ci_high"], se)
        wide = widened(iv, conf) if not math.isnan(conf) and not math.isnan(se) else iv
        out.append({**{k: x for k, x in r.items() if k != "_se"}, "adjustment": method, "confidence_adjusted": conf,
                    "ci_low_adjusted": wide.low if not math.isnan(conf) else math.nan,
                    "ci_high_adjusted": wide.high if not math.isnan(conf) else math.nan,
                    "p_difference_adjusted": d, "p_equivalence_adjusted": e, "verdict": v, "holm_verdict": hv})
    return out
