"""The lecture's claims: the paired t-interval and the verdict rules, by hand; then planted effects
through the real snakemake."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from cnnlab.report import claims
from tests.helpers import SNAKEMAKE, copy_workflow, run
from tests.tiny_cifar import write_tiny_archive

T_975_DF2 = 4.302653  # Student t, 97.5th percentile, 2 degrees of freedom (any printed table)
T_975_DF3 = 3.182446


def test_paired_interval_equals_a_hand_computation():
    # d = [1, 2, 4]: mean 7/3; sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3.
    iv = claims.paired_interval([1.0, 2.0, 4.0])
    half = T_975_DF2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(7 / 3)
    assert (iv.low, iv.high) == (pytest.approx(7 / 3 - half, rel=1e-6), pytest.approx(7 / 3 + half, rel=1e-6))
    # d = [0.5, -0.5, 1.5, 2.5]: mean 1, sample variance (0.25 + 2.25 + 0.25 + 2.25) / 3 = 5/3.
    iv = claims.paired_interval([0.5, -0.5, 1.5, 2.5])
    half = T_975_DF3 * math.sqrt(5 / 3) / 2
    assert (iv.mean, iv.low, iv.high) == (pytest.approx(1), pytest.approx(1 - half, rel=1e-6),
                                          pytest.approx(1 + half, rel=1e-6))


def test_differences_are_paired_by_seed_and_unpaired_seeds_are_left_out():
    cnn = {0: 0.70, 1: 0.72, 2: 0.71, 5: 0.90}
    mlp = {0: 0.50, 1: 0.49, 2: 0.52, 3: 0.10}
    assert claims.paired_differences(cnn, mlp) == pytest.approx([0.20, 0.23, 0.19])
    row = claims.claim_row("the CNN beats the MLP", "cnn vs mlp", claims.paired_differences(cnn, mlp))
    assert row["n_seeds"] == 3 and row["effect_mean"] == pytest.approx(100 * 0.62 / 3)  # points
    assert row["verdict"] == claims.HOLDS and row["regime"] == "full"


def unadjusted(differences, delta=1.0):
    return claims.claim_row("a claim", "a vs b", differences, scale=1.0, delta=delta)["unadjusted_verdict"]


@pytest.mark.parametrize("differences, expected", [
    ([3.0, 3.5, 2.5], claims.HOLDS),  # the whole interval above zero, and above delta
    ([1.5, 1.0, 2.0], claims.HOLDS),  # [+0.26, +2.74]: above zero, not inside +-1
    ([-3.0, -3.5, -2.5], claims.CONTRADICTED),  # the whole interval below zero
    ([3.0, -1.0, 0.5], claims.INCONCLUSIVE),  # the interval spans zero and reaches past delta
    # The "L1 improves the MLP": +0.37 points, interval about [+0.07, +0.67]. Above zero, yet
    # inside +-1 point: shown too small to matter, so negligible, not holds.
    ([0.25, 0.37, 0.49], claims.NEGLIGIBLE),
    ([0.2, -0.1, 0.1, 0.0, 0.05], claims.NEGLIGIBLE),  # five seeds around zero: equivalence shown
    ([0.1, 0.1, 0.1], claims.NEGLIGIBLE),  # no spread, inside +-1
    ([9.0], claims.ONE_SEED),  # a sign alone is never a result
    ([-9.0], claims.ONE_SEED),
    ([], claims.NO_PAIR),
])
def test_verdict_rules(differences, expected):
    assert unadjusted(differences) == expected


def test_the_one_seed_verdict_says_one_seed_decides_nothing():
    assert "one seed decides nothing" in claims.ONE_SEED and claims.ONE_SEED.startswith(claims.INCONCLUSIVE)


def test_the_p_values_give_the_same_verdicts_as_the_95_percent_interval():
    # Verdicts come from p-values (so that they can be adjusted); unadjusted, they must say what the
    # interval says: above 0 <=> p_difference < 0.05, inside +-delta <=> p_equivalence < 0.05.
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 7))
        d = rng.normal(rng.normal(0, 2), rng.uniform(0.05, 2), n)
        iv = claims.paired_interval(d)
        row = claims.claim_row("c", "m", list(d), scale=1.0)
        assert (row["p_difference"] < 0.05) == (iv.low > 0 or iv.high < 0)
        assert (row["p_equivalence"] < 0.05) == (-1 < iv.low and iv.high < 1)
        inside = -1 < iv.low and iv.high < 1
        expected = (claims.NEGLIGIBLE if inside else claims.HOLDS if iv.low > 0
                    else claims.CONTRADICTED if iv.high < 0 else claims.INCONCLUSIVE)
        assert row["unadjusted_verdict"] == expected


def test_the_smallest_effect_of_interest_decides_negligible():
    d = [0.7, 0.9, 1.1, 0.8, 1.0]  # mean 0.9, interval [+0.70, +1.10]: above 0, reaching past 1
    assert unadjusted(d, delta=1.0) == claims.HOLDS
    assert unadjusted(d, delta=1.5) == claims.NEGLIGIBLE
    assert unadjusted(d, delta=0.5) == claims.HOLDS


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04: x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept at 0.06 (monotone)
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert claims.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = claims.holm([math.nan, 0.01, 0.02])  # NaN is no test: a family of two
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.02, 0.02])


def test_benjamini_hochberg_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4/1 = 0.02, x4/2 = 0.02, x4/3 = 0.04, x4/4 = 0.04
    assert claims.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert claims.benjamini_hochberg([0.04, 0.3]) == pytest.approx([0.08, 0.3])


def family(true_effect_rows):
    """Twenty claims as in the cpu study: a few large effects, the rest noise around zero."""
    rows = [claims.claim_row(f"claim {i}", "m", d, scale=1.0) for i, d in enumerate(true_effect_rows)]
    return claims.adjust(rows, "holm")


def test_holm_turns_a_lone_five_percent_finding_into_inconclusive_and_keeps_the_large_ones():
    cnn_vs_mlp = [19.9, 20.3, 19.6, 20.1, 19.8]  # the best CNN against the best MLP, five seeds
    modest = [1.5, 2.8, 2.2, 0.9, 2.6]  # mean 2.0, interval [+1.02, +2.98]: p = 0.0048
    noise = [[0.9, -1.1, 0.4, -0.6, 1.3], [-0.8, 0.7, 1.5, -1.4, 0.2]] * 9  # 18 claims, no effect
    rows = family([cnn_vs_mlp, modest, *noise])
    assert len(rows) == 20 and all(r["adjustment"] == "holm" for r in rows)
    assert rows[0]["verdict"] == claims.HOLDS and rows[0]["p_difference_adjusted"] < 1e-6
    # Alone at 95% the modest gain holds; among twenty claims its p x 19 (second step) is 0.05 or more.
    assert rows[1]["unadjusted_verdict"] == claims.HOLDS
    assert rows[1]["p_difference_adjusted"] == pytest.approx(19 * rows[1]["p_difference"])
    assert rows[1]["verdict"] == claims.INCONCLUSIVE
    assert all(r["verdict"] == claims.INCONCLUSIVE for r in rows[2:])
    # Benjamini-Hochberg at 5% keeps it: second of twenty, 0.0048 x 20 / 2 = 0.048 < 0.05.
    fdr = claims.adjust([{k: v for k, v in r.items()} for r in rows], "fdr_bh")
    assert fdr[1]["verdict"] == claims.HOLDS


def test_three_seeds_cannot_pass_holms_first_step_where_five_can():
    # The arithmetic behind five seeds: a two-sided p below 0.05 / 20 needs |t| above
    # t(0.99875; df), 19.96 on 2 df and 6.76 on 4 df.
    assert stats.t.ppf(1 - 0.0025 / 2, 2) == pytest.approx(19.96, abs=0.01)
    assert stats.t.ppf(1 - 0.0025 / 2, 4) == pytest.approx(6.76, abs=0.01)
    gain = [7.0, 8.0, 9.0]  # +8 points, sd 1: t = 13.9 on 2 df, a large, consistent effect
    five = [7.0, 8.0, 9.0, 7.5, 8.5]
    assert claims.holm([claims.claim_row("c", "m", gain, scale=1.0)["p_difference"]] * 20)[0] > 0.05
    assert claims.holm([claims.claim_row("c", "m", five, scale=1.0)["p_difference"]] * 20)[0] < 0.05


def test_the_adjusted_verdict_and_the_unadjusted_one_are_both_in_the_row():
    row = claims.adjust([claims.claim_row("c", "m", [0.02, 0.025, 0.03], regime="limited")])[0]
    assert set(claims.COLUMNS) == set(row)
    assert row["regime"] == "limited" and row["delta"] == claims.DEFAULT_DELTA
    assert row["unadjusted_verdict"] == claims.HOLDS and row["verdict"] == claims.HOLDS  # a family of one


PLANTED = """\
description: Effects planted so that their verdicts are known.
seeds: [0, 1, 2]
overrides: [trainer.max_epochs=6, trainer.batch_size=32, "model.hidden=[64]", data=zscore]
variants:
  mlp_baseline: {adds: baseline, baseline: true, overrides: [model=mlp, optimizer=adam]}
  # An absurd L2 weight: the weights are held at zero and the MLP cannot learn.
  mlp_l2: {adds: L2 at 100, optimization: l2, overrides: [model=mlp, optimizer=adam, regularization.l2=100]}
  # A baseline that cannot learn (learning rate 0), and Adam, which can.
  cnn_baseline: {adds: baseline, baseline: true, overrides: [model=cnn, "model.channels=[8,16]", optimizer.lr=0]}
  cnn_adaptive_lr: {adds: Adam, optimization: adaptive_lr, overrides: [model=cnn, "model.channels=[8,16]",
                    optimizer=adam, optimizer.lr=0.003]}
report:
  sensitivity_images: 100
  sensitivity: [mlp_baseline, cnn_adaptive_lr]
"""


@pytest.mark.slow
def test_planted_effects_come_out_with_their_verdicts_through_the_real_workflow(tmp_path):
    wd = copy_workflow(tmp_path / "wd", {"planted": PLANTED})
    md5 = write_tiny_archive(tmp_path / "tiny.tar.gz", 100)
    proc = run([SNAKEMAKE, "--cores", "2", "-s", str(wd / "Snakefile"), "--directory", str(wd), "--config",
                "study=planted", f"data_url={tmp_path / 'tiny.tar.gz'}", f"data_md5={md5}", "train_records=500",
                "test_records=100", "val_size=100"], cwd=wd, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "12 training jobs to run" in proc.stdout + proc.stderr  # the estimate printed before any job
    rows = list(csv.DictReader(open(wd / "results" / "planted" / "report" / "claims.csv")))
    by = {(r["claim"], r["model"]): r for r in rows}
    l2 = by[("L2 regularization improves test accuracy", "mlp: mlp_l2 vs mlp_baseline")]
    adam = by[("an adaptive learning rate improves test accuracy", "cnn: cnn_adaptive_lr vs cnn_baseline")]
    cnn_vs_mlp = by[("the CNN beats the MLP (baselines)", "cnn_baseline vs mlp_baseline")]
    verdicts = [r["unadjusted_verdict"] for r in (l2, adam, cnn_vs_mlp)]
    assert verdicts == ["contradicted", "holds", "contradicted"]
    assert float(l2["ci_high"]) < 0 < float(adam["ci_low"])
    assert all(r["n_seeds"] == "3" and r["regime"] == "full" for r in (l2, adam, cnn_vs_mlp))
    # Adjusted over the family (Holm): a finding survives or becomes inconclusive, never flips.
    for r in rows:
        assert r["verdict"] in (r["unadjusted_verdict"], "inconclusive")
        assert float(r["p_difference_adjusted"]) >= float(r["p_difference"])
    position = by[("the CNN is less sensitive to position", "cnn_adaptive_lr vs mlp_baseline")]
    assert position["n_seeds"] == "3" and position["verdict"] in claims.TESTED
    html = (wd / "results" / "planted" / "report" / "report.html").read_text()
    assert html.index("the lecture&#x27;s claims") < html.index("Summary")  # the claims come first
    assert "verdict (Holm)" in html  # the verdict column names the study's adjustment (holm: the default)
