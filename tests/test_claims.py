"""The lecture's claims: the paired t-interval and the verdict rules, by hand; then planted effects
through the real snakemake."""

from __future__ import annotations

import csv
import math

import pytest

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
    assert row["verdict"] == claims.HOLDS


@pytest.mark.parametrize("differences, expected", [
    ([3.0, 3.5, 2.5], claims.HOLDS),  # the whole interval above zero
    ([-3.0, -3.5, -2.5], claims.CONTRADICTED),  # the whole interval below zero
    ([3.0, -1.0, 0.5], claims.INCONCLUSIVE),  # the interval spans zero
    ([0.1, 0.1, 0.1], claims.HOLDS),  # no spread: a consistent small gain is still a gain
    ([9.0], claims.ONE_SEED),  # a sign alone is never a result
    ([-9.0], claims.ONE_SEED),
    ([], claims.NO_PAIR),
])
def test_verdict_rules(differences, expected):
    iv = claims.paired_interval(differences)
    assert claims.verdict(iv) == expected
    if len(differences) < 2:
        assert math.isnan(iv.low) and math.isnan(iv.high)


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
    assert (l2["verdict"], adam["verdict"], cnn_vs_mlp["verdict"]) == ("contradicted", "holds", "contradicted")
    assert float(l2["ci_high"]) < 0 < float(adam["ci_low"])
    assert all(r["n_seeds"] == "3" for r in (l2, adam, cnn_vs_mlp))
    position = by[("the CNN is less sensitive to position", "cnn_adaptive_lr vs mlp_baseline")]
    assert position["n_seeds"] == "3" and position["verdict"] in ("holds", "contradicted", "inconclusive")
    html = (wd / "results" / "planted" / "report" / "report.html").read_text()
    assert html.index("the lecture&#x27;s claims") < html.index("Summary")  # the claims come first
