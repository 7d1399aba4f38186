"""Regimes: each claim tested where its mechanism applies. The data-limited regime's fixed subset,
the regimes of a study file, their seeds and budgets, and the promise the report checks."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from cnnlab.data.datamodule import ArrayDataModule
from cnnlab.data.preprocess import load_arrays
from cnnlab.data.subset import fixed_subset
from cnnlab.errors import UserError
from cnnlab.report.sections.claims import regime_checks
from cnnlab.study.studies import CONF_DIR, compose_config, load_study
from tests.helpers import tiny_prepared


@pytest.fixture
def conf(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return conf


def test_the_subset_is_fixed_by_its_own_seed_and_takes_the_classes_in_turn():
    labels = torch.arange(10).repeat_interleave(4500)  # 45,000 images, 4,500 of each class, sorted by class
    take = fixed_subset(labels, 5000, seed=0)
    assert len(take) == 5000 and len(set(take.tolist())) == 5000 and torch.equal(take, take.sort().values)
    assert torch.bincount(labels[take]).tolist() == [500] * 10  # 500 of each class, not by chance
    assert torch.equal(take, fixed_subset(labels, 5000, seed=0))  # the same call, the same images
    other = fixed_subset(labels, 5000, seed=1)
    assert not torch.equal(take, other) and torch.bincount(labels[other]).tolist() == [500] * 10
    assert sorted(torch.bincount(labels[fixed_subset(labels, 25, seed=0)]).tolist()) == [2] * 5 + [3] * 5
    assert torch.equal(fixed_subset(labels, 0, seed=0), torch.arange(45000))  # 0: every image


def test_every_variant_and_seed_of_the_limited_regime_trains_on_the_same_images(tmp_path):
    arrays = tiny_prepared(tmp_path / "tiny", n_per_batch=100, val_size=100)  # 400 training images
    raw = load_arrays(arrays)

    def train_set(variant, seed, *extra):
        cfg = compose_config([f"data.arrays={arrays}", "data.train_subset=120", *extra],
                             study="lecture", variant=variant, seed=seed)
        dm = ArrayDataModule(cfg)
        dm.setup()
        return dm.arrays["train"], dm.arrays["val"]

    (x0, y0), (xv, _) = train_set("mlp_limited_baseline", 0)
    assert len(y0) == 120 and len(xv) == 100  # validation stays whole
    for variant, seed in (("mlp_limited_baseline", 3), ("cnn_l2", 0), ("cnn_dropout", 4)):
        (x, y), _ = train_set(variant, seed)
        assert torch.equal(x, x0) and torch.equal(y, y0)
    # The images are those of fixed_subset, taken from the split; another subset seed takes others.
    keep = fixed_subset(torch.from_numpy(raw["y_train"]), 120, 0)
    assert torch.equal(y0, torch.from_numpy(raw["y_train"]).long()[keep])
    (_, y_other), _ = train_set("mlp_limited_baseline", 0, "data.train_subset_seed=1")
    assert not torch.equal(y_other, y0)


@pytest.mark.slow  # composes every variant of every study
def test_regimes_set_seeds_budgets_and_baselines_and_budget_studies_only_change_budgets(conf):
    cpu, quick = load_study("cpu", conf), load_study("quick", conf)
    assert list(cpu.variants) == list(load_study("lecture", conf).variants)
    assert {v: cpu.seeds_of(v) for v in ("mlp_zscore", "cnn_l1")} == {
        "mlp_zscore": (0, 1, 2), "cnn_l1": (0, 1, 2, 3, 4)}
    # 11 full-data variants x 3 seeds + 10 limited ones x 5
    assert len(cpu.jobs()) == 11 * 3 + 10 * 5 and len(quick.jobs()) == 21
    assert cpu.baseline_of("mlp_dropout") == "mlp_limited_baseline" and cpu.baseline_of("cnn_gap") == "cnn_baseline"
    epochs = {v: compose_config(study="cpu", variant=v, conf_dir=conf).trainer.max_epochs
              for v in ("mlp_baseline", "cnn_baseline", "mlp_limited_baseline", "cnn_augment")}
    assert epochs == {"mlp_baseline": 10, "cnn_baseline": 8, "mlp_limited_baseline": 30, "cnn_augment": 40}
    # Every variant of every study, sweeps included, decays its rate along a cosine over its epochs.
    for name in ("lecture", "cpu", "quick", "cpu_tuning", "lecture_tuning"):
        study = load_study(name, conf)
        for v in study.variants:
            cfg = compose_config(study=name, variant=v, conf_dir=conf)
            assert cfg.schedule._target_ == "cnnlab.optim.schedules.cosine", (name, v)
    cnn_l1 = compose_config(study="quick", variant="cnn_l1", conf_dir=conf)
    assert (cnn_l1.trainer.max_epochs, cnn_l1.data.train_subset) == (5, 5000)
    assert list(cnn_l1.model.channels) == [16, 32, 64]


@pytest.mark.parametrize("study, message", [
    ("variants: {a: {overrides: [model=mlp], regime: small}}", "names the regime 'small', which 'regimes' does not"),
    ("regimes: {small: {epochs: 3}}\nvariants: {a: {overrides: [model=mlp]}}", "regime 'small' must be a mapping"),
    ("regimes: {small: {seeds: [-1]}}\nvariants: {a: {overrides: [model=mlp]}}", "'regimes.small.seeds' must be"),
    ("variants:\n  a: {overrides: [model=mlp], baseline: true}\n  b: {overrides: [model=mlp], baseline: true}",
     "both marked baseline for model 'mlp' in the regime 'full'"),
])
def test_a_bad_regime_is_one_sentence(conf, study, message):
    (conf / "study" / "bad.yaml").write_text(study + "\n")
    with pytest.raises(UserError, match=message):
        load_study("bad", conf)


def test_one_baseline_per_model_and_regime_is_allowed(conf):
    (conf / "study" / "two.yaml").write_text(
        "regimes: {small: {seeds: [7], overrides: [data.train_subset=100]}}\nvariants:\n"
        "  a: {overrides: [model=mlp], baseline: true}\n  b: {overrides: [model=mlp], baseline: true, regime: small}\n"
        "  c: {overrides: [model=mlp], optimization: l2, regime: small}\n")
    study = load_study("two", conf)
    assert study.jobs() == [("a", 0), ("b", 7), ("c", 7)] and study.baseline_of("c") == "b"
    assert compose_config(study="two", variant="c", conf_dir=conf).data.train_subset == 100


def test_the_report_checks_the_overfitting_the_limited_regime_promises(conf):
    study = load_study("cpu", conf)
    assert study.regimes["limited"].baseline_gap_points == 15
    table = pd.DataFrame({"variant": list(study.variants), "gap_mean": [float("nan")] * len(study.variants)})
    table.loc[table.variant == "mlp_limited_baseline", "gap_mean"] = 0.273
    table.loc[table.variant == "cnn_limited_baseline", "gap_mean"] = 0.052  # the old cpu study's CNN gap
    said = regime_checks(study, table)
    assert len(said) == 2  # the full-data baselines promise nothing
    assert "mlp_limited_baseline overfits as the limited regime promises: train - validation gap +27.3" in said[0]
    assert "cnn_limited_baseline does NOT overfit as the limited regime promises" in said[1] and "+5.2" in said[1]


def test_no_study_description_promises_what_no_check_backs():
    # The cpu study once said "long enough for the networks to overfit" while its baselines' gaps were
    # 1 and 5 points. A promise of overfitting belongs to a regime with baseline_gap_points, which the
    # report checks against the runs (test above); no description makes it unchecked.
    for name in ("lecture", "cpu", "quick"):
        assert "long enough" not in load_study(name).description.lower()


def test_the_limited_regime_keeps_its_own_rate_whatever_the_tuning_chose(conf, tmp_path):
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps({v: {"setting": "optimizer.lr", "value": value}
                                  for v, value in (("mlp_baseline", 0.3), ("cnn_zscore", 0.03))}))
    variants = ("mlp_baseline", "cnn_zscore", "mlp_limited_baseline", "mlp_l1", "cnn_limited_baseline", "cnn_augment")
    lr = {v: compose_config([f"run.tuned={chosen}"], study="cpu", variant=v, conf_dir=conf).optimizer.lr
          for v in variants}
    assert lr == {"mlp_baseline": 0.3, "cnn_zscore": 0.03, "mlp_limited_baseline": 0.1, "mlp_l1": 0.1,
                  "cnn_limited_baseline": 0.1, "cnn_augment": 0.1}
