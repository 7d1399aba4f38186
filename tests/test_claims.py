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
    # Above zero, yet inside +-1 point: real, and shown too small to matter.
    ([0.25, 0.37, 0.49], claims.HOLDS_SMALL),
    ([-0.25, -0.37, -0.49], claims.CONTRADICTED_SMALL),
    ([0.2, -0.1, 0.1, 0.0, 0.05], claims.NEGLIGIBLE),  # five seeds around zero: equivalence shown
    ([0.1, 0.1, 0.1], claims.HOLDS_SMALL),  # no spread, inside +-1 and above 0
    ([9.0], claims.ONE_SEED),  # a sign alone is never a result
    ([-9.0], claims.ONE_SEED),
    ([], claims.NO_PAIR),
])
def test_verdict_rules(differences, expected):
    assert unadjusted(differences) == expected


def test_the_one_seed_verdict_says_one_seed_decides_nothing():
    assert "one seed decides nothing" in claims.ONE_SEED and claims.ONE_SEED.startswith(claims.INCONCLUSIVE)


def test_the_p_values_give_the_same_verdicts_as_the_95_percent_interval():
    # The verdict is one rule read from an interval; the p-values (what adjustments act on) say the same
    # thing unadjusted: above 0 <=> p_difference < 0.05, inside +-delta <=> p_equivalence < 0.05.
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 7))
        d = rng.normal(rng.normal(0, 2), rng.uniform(0.05, 2), n)
        iv = claims.paired_interval(d)
        row = claims.claim_row("c", "m", list(d), scale=1.0)
        assert (row["p_difference"] < 0.05) == (iv.low > 0 or iv.high < 0)
        assert (row["p_equivalence"] < 0.05) == (-1 < iv.low and iv.high < 1)
        assert row["unadjusted_verdict"] == claims.interval_verdict(iv, 1.0)


def test_the_smallest_effect_of_interest_decides_under_delta():
    d = [0.7, 0.9, 1.1, 0.8, 1.0]  # mean 0.9, interval [+0.70, +1.10]: above 0, reaching past 1
    assert unadjusted(d, delta=1.0) == claims.HOLDS
    assert unadjusted(d, delta=1.5) == claims.HOLDS_SMALL
    assert unadjusted(d, delta=0.5) == claims.HOLDS


def test_the_cpu_studys_augmentation_case_is_never_made_stronger_by_adjustment():
    # The recorded mlp_augment claim: +0.61 [+0.26, +0.97] over five seeds, alone "holds, under delta".
    # Adjusted among twenty claims, by any method, its interval only widens: it may lose "under delta"
    # (or "above 0"), and it never gains a fact it did not show alone.
    augment = [0.35, 0.45, 0.61, 0.80, 0.84]
    iv = claims.paired_interval(augment)
    assert iv.low > 0 and iv.high < 1
    others = [[19.9, 20.3, 19.6, 20.1], [6.1, 6.6, 6.2, 6.4], [0.9, -1.1, 0.4, -0.6, 1.3],
              [-0.8, 0.7, 1.5, -1.4, 0.2], [0.1, -0.2, 0.0, 0.15, -0.1]] * 4
    rows = [claims.claim_row("augment", "m", augment, scale=1.0),
            *(claims.claim_row(f"c{i}", "m", d, scale=1.0) for i, d in enumerate(others[:19]))]
    assert rows[0]["unadjusted_verdict"] == claims.HOLDS_SMALL
    for method in claims.ADJUSTMENTS:
        row = claims.adjust(rows, method)[0]
        assert claims.weaker_or_equal(row["verdict"], row["unadjusted_verdict"]), method
        assert claims.weaker_or_equal(row["holm_verdict"], row["unadjusted_verdict"]), method
        assert row["verdict"] != claims.NEGLIGIBLE or row["unadjusted_verdict"] in (
            claims.NEGLIGIBLE, claims.HOLDS_SMALL, claims.CONTRADICTED_SMALL)


@pytest.mark.parametrize("method", sorted(claims.ADJUSTMENTS))
def test_no_adjustment_makes_any_claim_stronger_over_random_families(method):
    rng = np.random.default_rng(1)
    for _ in range(200):
        m = int(rng.integers(1, 25))
        rows = []
        for i in range(m):
            n = int(rng.integers(1, 7))
            rows.append(claims.claim_row(f"c{i}", "m", list(rng.normal(rng.normal(0, 2), rng.uniform(0.05, 3), n)),
                                         scale=1.0, delta=float(rng.uniform(0.2, 2))))
        for row in claims.adjust(rows, method):
            assert claims.weaker_or_equal(row["verdict"], row["unadjusted_verdict"])
            assert claims.weaker_or_equal(row["holm_verdict"], row["unadjusted_verdict"])
            if not math.isnan(row["ci_low_adjusted"]):  # an interval adjustment: wider, same centre
                low, high = row["ci_low_adjusted"], row["ci_high_adjusted"]
                assert low <= row["ci_low"] + 1e-12 and high >= row["ci_high"] - 1e-12
                iv = claims.Interval(row["n_seeds"], row["effect_mean"], low, high)
                assert claims.interval_verdict(iv, row["delta"]) == row["verdict"]  # one rule, read from it


def test_the_fcr_interval_is_at_one_minus_r_q_over_m():
    # Four claims, two of them clear effects that Benjamini-Hochberg selects: R = 2, m = 4, level 1 - 2 x 0.05 / 4.
    rows = [claims.claim_row("a", "m", [5.0, 5.2, 4.9, 5.1], scale=1.0),
            claims.claim_row("b", "m", [-3.0, -3.2, -2.9, -3.1], scale=1.0),
            claims.claim_row("c", "m", [0.5, -2.0, 1.5, 3.0], scale=1.0),
            claims.claim_row("d", "m", [1.0, -1.0, 2.0, -2.5], scale=1.0)]
    out = claims.adjust(rows, "fcr")
    assert all(r["confidence_adjusted"] == pytest.approx(1 - 2 * 0.05 / 4) for r in out)
    d = np.array([5.0, 5.2, 4.9, 5.1])
    half = stats.t.ppf(1 - 0.025 / 2, 3) * d.std(ddof=1) / 2
    assert (out[0]["ci_low_adjusted"], out[0]["ci_high_adjusted"]) == (pytest.approx(d.mean() - half),
                                                                        pytest.approx(d.mean() + half))


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


def test_holm_over_the_combined_family_turns_a_lone_five_percent_finding_into_inconclusive():
    cnn_vs_mlp = [19.9, 20.3, 19.6, 20.1, 19.8]  # the best CNN against the best MLP, five seeds
    modest = [1.5, 2.8, 2.2, 0.9, 2.6]  # mean 2.0, interval [+1.02, +2.98]: p = 0.0048
    noise = [[0.9, -1.1, 0.4, -0.6, 1.3], [-0.8, 0.7, 1.5, -1.4, 0.2]] * 9  # 18 claims, no effect
    rows = claims.adjust([claims.claim_row(f"claim {i}", "m", d, scale=1.0)
                          for i, d in enumerate([cnn_vs_mlp, modest, *noise])], "holm")
    assert len(rows) == 20 and all(r["adjustment"] == "holm" for r in rows)
    assert rows[0]["verdict"] == claims.HOLDS and rows[0]["p_difference_adjusted"] < 1e-6
    # Alone at 95% the modest gain holds; among 40 tests (a difference and an equivalence per claim) it does not.
    assert rows[1]["unadjusted_verdict"] == claims.HOLDS and rows[1]["verdict"] == claims.INCONCLUSIVE
    assert rows[1]["holm_verdict"] == rows[1]["verdict"]
    assert all(r["verdict"] == claims.INCONCLUSIVE for r in rows[2:])


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
    assert set(claims.COLUMNS) == set(row) and row["adjustment"] == "fcr"
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
    # Adjusted over the family (FCR-adjusted intervals, the default): a finding survives or weakens, never flips.
    for r in rows:
        assert claims.weaker_or_equal(r["verdict"], r["unadjusted_verdict"])
        assert float(r["p_difference_adjusted"]) >= float(r["p_difference"])
        assert float(r["ci_low_adjusted"]) <= float(r["ci_low"]) and r["adjustment"] == "fcr"
    position = by[("the CNN is less sensitive to position", "cnn_adaptive_lr vs mlp_baseline")]
    assert position["n_seeds"] == "3" and position["verdict"] in claims.TESTED
    html = (wd / "results" / "planted" / "report" / "report.html").read_text()
    assert html.index("the lecture&#x27;s claims") < html.index("Summary")  # the claims come first
    # The verdict column names the study's adjustment (fcr: the default), Holm's beside it; the plan is printed.
    assert "verdict (FCR-adjusted intervals)" in html and "<th>Holm</th>" in html
    assert "The analysis plan (fixed in conf/study/planted.yaml before the runs; hash" in html
    assert "It is the plan fixed when the runs started" in html
