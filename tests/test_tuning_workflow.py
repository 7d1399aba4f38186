"""Each variant at its own best setting, through the real snakemake: a tiny study with a rate grid,
a strength grid in a limited regime and a variant tuned "same_as" another; its tuning study runs
first, its choice reaches the study's runs, and the report and the record hold to the plan fixed
when the runs started."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from bench.results_table import record
from cnnlab.errors import UserError
from cnnlab.study.tuning import format_value
from tests.helpers import PYTHON, SNAKEMAKE, copy_workflow, run
from tests.tiny_cifar import write_tiny_archive

TINY = """\
description: A tiny tuned study.
seeds: [0, 1]
overrides: [trainer.max_epochs=2, trainer.batch_size=32, "model.hidden=[16]", schedule=cosine]
regimes:
  limited:
    seeds: [0, 1]
    overrides: [data.train_subset=100, data=zscore, optimizer.lr=0.05]
variants:
  mlp_baseline: {adds: baseline, baseline: true, overrides: [model=mlp]}
  mlp_batchnorm: {adds: batch norm, optimization: batch_norm, overrides: [model=mlp, model.batch_norm=true]}
  mlp_wide: {adds: "batch norm, wider", overrides: [model=mlp, model.batch_norm=true, "model.hidden=[24]"]}
  mlp_limited_baseline: {adds: baseline, baseline: true, regime: limited, overrides: [model=mlp]}
  mlp_l2: {adds: L2, optimization: l2, regime: limited, overrides: [model=mlp, regularization=l2]}
tuning:
  study: tiny_tuning
  tie_points: 0.0
  grids:
    mlp_baseline: {key: optimizer.lr, values: [0.001, 0.1]}
    mlp_batchnorm: {key: optimizer.lr, values: [0.003, 0.03, 0.3]}
    mlp_wide: {same_as: mlp_batchnorm}
    mlp_l2: {key: regularization.l2, values: [0.5, 0.0001]}
report:
  sensitivity_images: 40
  sensitivity: [mlp_batchnorm]
"""
TINY_TUNING = """\
extends: tiny
description: The tiny study's tuning.
seeds: [1000]
sweep:
  overrides:
    full: [trainer.max_epochs=1, trainer.if_loss_diverges=record]
    limited: [trainer.if_loss_diverges=record]
"""


@pytest.mark.slow
def test_each_variant_trains_at_its_own_chosen_value_and_the_report_keeps_to_the_plan(tmp_path):
    wd = copy_workflow(tmp_path / "wd", {"tiny": TINY, "tiny_tuning": TINY_TUNING})
    md5 = write_tiny_archive(tmp_path / "tiny.tar.gz", 100)
    cmd = [SNAKEMAKE, "--cores", "2", "-s", str(wd / "Snakefile"), "--directory", str(wd), "--config", "study=tiny",
           f"data_url={tmp_path / 'tiny.tar.gz'}", f"data_md5={md5}", "train_records=500", "test_records=100",
           "val_size=100"]
    proc = run(cmd, cwd=wd, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = wd / "results"
    # The tuning study's 2 + 3 + 2 points ran at its own seed; mlp_wide has none (same_as).
    points = sorted(p.parent.parent.name for p in (results / "tiny_tuning" / "runs").glob("*/seed1000/result.json"))
    assert len(points) == 7 and not any(p.startswith("mlp_wide") for p in points)
    chosen = json.loads((results / "tiny_tuning" / "chosen.json").read_text())
    assert set(chosen) == {"mlp_baseline", "mlp_batchnorm", "mlp_wide", "mlp_l2"}
    assert chosen["mlp_wide"]["same_as"] == "mlp_batchnorm" and chosen["mlp_wide"]["value"] == chosen[
        "mlp_batchnorm"]["value"]
    for entry in chosen.values():  # every value chosen among the grid's finished points
        assert entry["value"] is not None and entry["setting"] in ("optimizer.lr", "regularization.l2")
    # The study's runs train at their variant's chosen value; the limited regime keeps its own rate.
    for variant, seed in (("mlp_baseline", 1), ("mlp_wide", 0), ("mlp_l2", 1), ("mlp_limited_baseline", 0)):
        cfg = yaml.safe_load((results / "tiny" / "runs" / variant / f"seed{seed}" / "config.yaml").read_text())
        if variant == "mlp_l2":
            assert cfg["regularization"]["l2"] == chosen["mlp_l2"]["value"] and cfg["optimizer"]["lr"] == 0.05
        elif variant == "mlp_limited_baseline":
            assert cfg["optimizer"]["lr"] == 0.05 and cfg["regularization"]["l2"] == 0
        else:
            assert cfg["optimizer"]["lr"] == chosen[variant]["value"]
    # The claims name each tuned variant's setting; the report prints the plan fixed at the start.
    rows = {r["model"]: r for r in csv.DictReader(open(results / "tiny" / "report" / "claims.csv"))}
    l2 = rows["mlp: mlp_l2 vs mlp_limited_baseline"]
    assert l2["setting"].startswith(f"regularization.l2 = {format_value(chosen['mlp_l2']['value'])}, chosen on "
                                    "validation from 1e-04 to 0.5") and l2["regime"] == "limited"
    html = (results / "tiny" / "report" / "report.html").read_text()
    assert "Each variant at its own best setting, chosen on validation" in html
    assert "It is the plan fixed when the runs started" in html
    assert (results / "tiny" / "report" / "dose_response.png").stat().st_size > 10_000
    assert (results / "tiny" / "report" / "tuning_rates.png").stat().st_size > 10_000
    # The notebook's one call: a finished study's claims, summary and runs as DataFrames.
    import cnnlab.report

    study = cnnlab.report.load(results / "tiny")
    assert list(study.claims.model) == list(rows) and len(study.summary) == 5
    assert len(study.runs) == 10 and set(study.runs["tags.variant"]) == set(study.summary.variant)
    assert study.figure("claims_forest").stat().st_size > 10_000
    with pytest.raises(UserError, match="holds no finished study"):
        cnnlab.report.load(results / "tiny_tuning")
    plan = json.loads((results / "tiny" / "plan.json").read_text())
    assert plan["plan"]["tuning"]["grids"]["mlp_l2"] == {"key": "regularization.l2", "values": [0.5, 0.0001]}

    # A seed added after the runs started: the report says so, and the record refuses the study.
    study = wd / "conf" / "study" / "tiny.yaml"
    study.write_text(study.read_text().replace("seeds: [0, 1]\noverrides", "seeds: [0, 1, 2]\noverrides"))
    proc = run([PYTHON, "-m", "cnnlab.report", "--study", "tiny", "--conf-dir", str(wd / "conf"), "--arrays",
                str(results / "data" / "cifar10.npz"), "--out", str(results / "tiny" / "report")], cwd=wd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (results / "tiny" / "report" / "report.html").read_text()
    assert "THE STUDY FILE HAS CHANGED since the runs started" in html
    with pytest.raises(SystemExit, match="changed after its runs started"):
        record(wd, "tiny", 60.0, "snakemake", out=tmp_path / "tiny.json", conf_dir=wd / "conf")
