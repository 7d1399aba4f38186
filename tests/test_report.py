"""The comparison report, built from a real SQLite MLflow store holding known runs.

The store is written the way training writes it (tags, per-epoch and final metrics, config.yaml
and checkpoints/best.ckpt artifacts of real, tiny networks), with one failed run, one missing seed
and one variant that never ran, so the report's numbers can be checked by hand.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from omegaconf import OmegaConf
from scipy import stats

from cnnlab.data.preprocess import prepare
from cnnlab.models import build_network, family_of, network_class
from cnnlab.report import build_report
from cnnlab.report.__main__ import main as report_main
from cnnlab.report.registry import figures
from cnnlab.study.studies import CONF_DIR, compose_config
from tests.tiny_cifar import write_tiny_archive

STUDY = "reptest"
BARE_STUDY = "reptest_bare"  # the same runs without any artifacts
STUDY_YAML = """\
description: A hand-made store for the report's tests.
seeds: [0, 1]
overrides:
  - trainer.max_epochs=3
  - "model.hidden=[16]"
variants:
  mlp_baseline: {adds: baseline, baseline: true, overrides: [model=mlp]}
  mlp_zscore: {adds: z-score, optimization: zscore, overrides: [model=mlp, data=zscore]}
  mlp_dropout: {adds: dropout, optimization: dropout, overrides: [model=mlp, model.dropout=0.2]}
  cnn_baseline: {adds: baseline, baseline: true, overrides: [model=cnn, "model.channels=[4,8]"]}
  cnn_all: {adds: all together, combined: true, overrides: [model=cnn, "model.channels=[4,8]", data=zscore]}
report:
  sensitivity_images: 40
"""
# (variant, seed) -> final test accuracy; None marks a failed run. Absent pairs have no run.
TEST_ACC = {
    ("mlp_baseline", 0): 0.38,
    ("mlp_baseline", 1): 0.42,
    ("mlp_zscore", 0): 0.45,
    ("mlp_zscore", 1): None,
    ("cnn_baseline", 0): 0.50,
    ("cnn_baseline", 1): 0.56,
    ("cnn_all", 0): 0.61,
}
FAILURE = "NonFiniteLossError: the loss became nan at epoch 2"
EPOCHS = 3


def make_data(root: Path) -> Path:
    archive = root / "tiny.tar.gz"
    md5 = write_tiny_archive(archive, n_per_batch=20, n_test=60)
    arrays = root / "data" / "cifar10.npz"
    prepare(archive, arrays, arrays.with_suffix(".json"), md5, val_size=20, train_records=100, test_records=60)
    return arrays


def make_conf(root: Path) -> Path:
    conf = root / "conf"
    shutil.copytree(CONF_DIR, conf)
    for name in (STUDY, BARE_STUDY):
        (conf / "study" / f"{name}.yaml").write_text(STUDY_YAML)
    return conf


def save_trained_artifacts(client, run_id: str, cfg, folder: Path, seed: int) -> None:
    """A real (untrained) network of the variant's config, saved as training saves its best checkpoint."""
    torch.manual_seed(seed)
    net = build_network(cfg.model)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, folder / "best.ckpt")
    client.log_artifact(run_id, str(folder / "config.yaml"))
    client.log_artifact(run_id, str(folder / "best.ckpt"), "checkpoints")


def make_store(root: Path, conf: Path, study: str = STUDY, with_checkpoints: bool = True) -> str:
    """The study's runs as an experiment in root/mlflow.db (created on first use: that costs seconds)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(study, artifact_location=(root / "artifacts" / study).as_uri())
    client.create_run(exp_id, run_name="prepare_data", tags={"cnnlab.kind": "prepare"})
    configs = {}
    for (variant, seed), acc in TEST_ACC.items():
        if variant not in configs:
            configs[variant] = compose_config([], study, variant, 0, conf)
        cfg = configs[variant]
        tags = {
            "cnnlab.kind": "train",
            "study": study,
            "variant": variant,
            "seed": str(seed),
            "model": family_of(cfg.model),
            "architecture": network_class(cfg.model).architecture,
            "git_commit": "abc123def456",
            "git_dirty": "False",
            "data_md5": "d41d8cd9",
            "device": "cpu test",
            "torch_version": torch.__version__,
        }
        run_id = client.create_run(exp_id, run_name=f"{variant}-seed{seed}", tags=tags).info.run_id
        client.log_batch(
            run_id, params=[Param("model._target_", cfg.model._target_), Param("data.normalize", cfg.data.normalize)]
        )
        epochs = 2 if acc is None else EPOCHS
        history = []
        for e in range(epochs):
            val = (acc or 0.3) * (0.7 + 0.1 * e)
            history += [
                Metric("val/acc", val, 0, e),
                Metric("val/loss", 2.0 - 0.2 * e, 0, e),
                Metric("train/images_per_sec", 1000.0 * (e + 1), 0, e),
            ]
        client.log_batch(run_id, metrics=history)
        if acc is None:
            client.set_tag(run_id, "error", FAILURE)
            client.set_terminated(run_id, "FAILED")
            continue
        final = {
            "test/acc": acc,
            "test/loss": 1.5,
            "best_val_acc": acc + 0.01,
            "epochs": EPOCHS,
            "params": 1000 * (seed + 7),
            "job_seconds": 10.0 + seed,
        }
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in final.items()])
        if with_checkpoints:
            save_trained_artifacts(client, run_id, cfg, root / "runs" / study / f"{variant}-{seed}", seed)
        client.set_terminated(run_id, "FINISHED")
    return uri


class Fixture:
    """Data, conf and one store holding both studies, made once for the module."""

    def __init__(self, root: Path):
        self.root = root
        self.arrays = make_data(root)
        self.conf = make_conf(root)
        self.uri = make_store(root, self.conf, STUDY)
        make_store(root, self.conf, BARE_STUDY, with_checkpoints=False)

    def build(self, study: str = STUDY) -> tuple[dict, Path]:
        out = self.root / f"report-{study}"
        return build_report(self.uri, study, self.conf, self.arrays, out), out


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(fixture) -> tuple[dict, Path]:
    return fixture.build()


def test_summary_numbers_equal_a_hand_computation(built):
    _, out = built
    table = pd.read_csv(out / "summary.csv").set_index("variant")
    assert list(table.index) == ["mlp_baseline", "mlp_zscore", "mlp_dropout", "cnn_baseline", "cnn_all"]
    base = table.loc["mlp_baseline"]
    assert base.test_acc_mean == pytest.approx((0.38 + 0.42) / 2)
    assert base.test_acc_std == pytest.approx(math.sqrt(((0.38 - 0.40) ** 2 + (0.42 - 0.40) ** 2) / (2 - 1)))
    assert base.best_val_acc_mean == pytest.approx(0.41)
    assert base.train_seconds_mean == pytest.approx(10.5)
    assert base.images_per_sec_mean == pytest.approx(3000)  # the last epoch's
    assert (base.n_runs, base.status, base.model, base.epochs, base.params) == (2, "ok", "mlp", EPOCHS, 7000)
    # The first layer of the rebuilt MLP: 3*32*32 inputs x 16 units + 16 biases.
    assert base.first_layer_params == 3072 * 16 + 16
    assert table.loc["cnn_baseline"].first_layer_params == 3 * 3 * 3 * 4 + 4


def test_failed_and_missing_runs_show_as_such(built):
    result, out = built
    table = pd.read_csv(out / "summary.csv").set_index("variant")
    z = table.loc["mlp_zscore"]
    assert (z.n_runs, z.n_failed, z.status, z.test_acc_std) == (1, 1, "partial", 0.0)
    assert FAILURE in z.errors
    assert (table.loc["cnn_all"].n_missing, table.loc["cnn_all"].status) == (1, "partial")
    never = table.loc["mlp_dropout"]
    assert (never.n_runs, never.n_missing, never.status) == (0, 2, "missing")
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 * 2  # every (variant, seed) of the study
    html = (out / "report.html").read_text()
    assert FAILURE in html and "no run in the tracking store" in html
    md = (out / "summary.md").read_text()
    assert "40.00 ± 2.83" in md and "missing (0/2 ok)" in md


def test_listing_the_figures_leaves_the_heavy_libraries_unimported():
    # The Snakefile lists the figures at every start; MLflow, Lightning and scipy would add seconds to it.
    code = (
        "import sys; from cnnlab.report.registry import figures; assert figures(); "
        "print(sorted(m for m in ('mlflow', 'pytorch_lightning', 'lightning_fabric', 'scipy') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_every_figure_is_drawn_and_embedded(built):
    result, out = built
    # What this store cannot show: no sweep, and no finished variant adding L1, L2, dropout or Adam.
    assert set(result["unavailable"]) == {"tuning_rates", "dose_response", "overfitting", "sparsity", "weight_norm",
                                          "adaptive_lr"}
    html = (out / "report.html").read_text()
    names = [f.name for f in figures()]
    assert len(names) >= 8 and set(result["figures"]) == set(names)
    for name in names:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert html.count('src="data:image/png;base64,') == len(names)
    assert result["clipped"] == []  # no figure's text reaches past its canvas
    # Sections are numbered by the code, in order.
    numbers = [int(h.split(".")[0]) for h in html.split("<h2>")[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert 'src="http' not in html and 'href="http' not in html and "<link" not in html and "<script" not in html


def test_ablation_and_sensitivity_use_the_best_runs(built):
    result, out = built
    html = (out / "report.html").read_text()
    # mlp_zscore seed 0 against mlp_baseline seed 0; cnn_all seed 0 against cnn_baseline seed 0.
    assert "+7.00 ± 0.00" in html and "+11.00 ± 0.00" in html
    assert "mlp_zscore (seed 0)" in html and "cnn_all (seed 0)" in html
    # These untrained networks score near chance: the one at or below it has no share above chance to keep.
    assert "mlp_zscore (dense, 1 seeds) keeps on average" in html and "nan%" not in html
    assert "cnn_all classified the untouched images no better than chance" in html


def test_the_report_is_logged_to_mlflow(fixture, built):
    result, out = built
    client = MlflowClient(tracking_uri=fixture.uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.run_name == "report" and run.data.tags["cnnlab.kind"] == "report"
    assert {"report.html", "summary.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_store_without_checkpoints_still_gives_a_report(fixture):
    result, out = fixture.build(BARE_STUDY)
    assert set(result["unavailable"]) == {"sensitivity", "confusion", "filters", "activations", "tuning_rates",
                                          "dose_response", "overfitting", "sparsity", "weight_norm", "adaptive_lr"}
    assert all((out / f"{f.name}.png").is_file() for f in figures())
    assert "Unavailable: no checkpoint" in (out / "report.html").read_text()


def test_command_line_reports_a_user_error_in_one_line(fixture, capsys, tmp_path):
    args = [
        "--uri",
        fixture.uri,
        "--conf-dir",
        str(fixture.conf),
        "--arrays",
        str(fixture.arrays),
        "--out",
        str(tmp_path),
    ]
    assert report_main([*args, "--study", "nosuchstudy"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Unknown study 'nosuchstudy'" in err
    (fixture.conf / "study" / "nevertrained.yaml").write_text(STUDY_YAML)
    assert report_main([*args, "--study", "nevertrained"]) == 1
    assert "no MLflow experiment named 'nevertrained'" in capsys.readouterr().err


def test_claims_csv_gives_each_claim_its_regime_delta_and_both_verdicts(built):
    _, out = built
    rows = pd.read_csv(out / "claims.csv").set_index("model")
    assert {"regime", "delta", "unadjusted_verdict", "verdict", "p_difference_adjusted", "adjustment"} <= set(rows)
    # The baselines, paired by seed: CNN - MLP = +12 and +14 points; 95% interval 13 +- 12.71 on 1 df.
    base = rows.loc["cnn_baseline vs mlp_baseline"]
    assert (base.regime, base.delta, base.n_seeds) == ("full", 1.0, 2)
    assert (base.ci_low, base.ci_high) == (pytest.approx(13 - 12.706, abs=1e-3), pytest.approx(13 + 12.706, abs=1e-3))
    assert base.unadjusted_verdict == "holds"
    # The family is every claim with two seeds; FCR-adjusted intervals (the default) only widen, and Holm's
    # verdict is beside the chosen one.
    tested = rows[rows.n_seeds >= 2]
    assert (tested.p_difference_adjusted >= tested.p_difference).all() and set(tested.adjustment) == {"fcr"}
    assert (tested.ci_low_adjusted <= tested.ci_low + 1e-9).all() and (tested.ci_high_adjusted >= tested.ci_high).all()
    expected = "holds" if base.ci_low_adjusted > 0 else "inconclusive"
    assert base.verdict == expected and base.holm_verdict in ("holds", "inconclusive")
    one_seed = rows[rows.n_seeds == 1]
    assert (one_seed.verdict == "inconclusive: one seed decides nothing").all() and len(one_seed)
    html = (out / "report.html").read_text()
    assert "delta = 1 point" in html and "false-coverage-rate adjusted intervals" in html
    # The method sits below the claims table, folded away.
    assert html.index("<table>", html.index("the lecture&#x27;s claims")) < html.index("<details>")


# -- "best", chosen on validation, and the numbers recomputed from the store -------------------------

PICK_YAML = """\
description: A variant whose best validation run is not its best test run.
seeds: [0, 1, 2]
overrides: [trainer.max_epochs=2, "model.hidden=[16]"]
variants:
  mlp_baseline: {adds: baseline, baseline: true, overrides: [model=mlp]}
  mlp_zscore: {adds: z-score, optimization: zscore, overrides: [model=mlp, data=zscore]}
  cnn_baseline: {adds: baseline, baseline: true, overrides: [model=cnn, "model.channels=[4,8]"]}
  cnn_batchnorm: {adds: batch norm, optimization: batch_norm, overrides: [model=cnn, "model.channels=[4,8]",
                  model.batch_norm=true]}
report:
  sensitivity_images: 40
"""
# (variant, seed) -> (test accuracy, best validation accuracy). cnn_batchnorm validates best of the CNNs
# and tests worst; cnn_baseline tests best.
PICK = {
    ("mlp_baseline", 0): (0.40, 0.41), ("mlp_baseline", 1): (0.42, 0.42), ("mlp_baseline", 2): (0.41, 0.40),
    ("mlp_zscore", 0): (0.46, 0.47), ("mlp_zscore", 1): (0.47, 0.49), ("mlp_zscore", 2): (0.44, 0.46),
    ("cnn_baseline", 0): (0.61, 0.55), ("cnn_baseline", 1): (0.63, 0.56), ("cnn_baseline", 2): (0.62, 0.54),
    ("cnn_batchnorm", 0): (0.57, 0.66), ("cnn_batchnorm", 1): (0.59, 0.65), ("cnn_batchnorm", 2): (0.56, 0.64),
}


def test_the_best_of_each_is_chosen_on_validation_and_the_numbers_are_the_stores(fixture, tmp_path):
    conf, study = fixture.conf, "valpick"
    (conf / "study" / f"{study}.yaml").write_text(PICK_YAML)
    client = MlflowClient(tracking_uri=fixture.uri)
    exp_id = client.create_experiment(study, artifact_location=(tmp_path / "artifacts").as_uri())
    for (variant, seed), (test, val) in PICK.items():
        cfg = compose_config([], study, variant, 0, conf)
        run_id = client.create_run(exp_id, run_name=f"{variant}-seed{seed}", tags={
            "cnnlab.kind": "train", "study": study, "variant": variant, "seed": str(seed),
            "model": family_of(cfg.model), "architecture": network_class(cfg.model).architecture}).info.run_id
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in (
            ("test/acc", test), ("best_val_acc", val), ("val/acc", val), ("train_probe/acc", val + 0.05))])
        client.set_terminated(run_id, "FINISHED")
    build_report(fixture.uri, study, conf, fixture.arrays, tmp_path / "report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("variant")
    claims = pd.read_csv(tmp_path / "report" / "claims.csv")

    # Recomputed from the store alone, independently of the report's code.
    runs = client.search_runs([exp_id], filter_string="tags.`cnnlab.kind` = 'train'")
    acc: dict[str, dict[int, float]] = {}
    val: dict[str, list[float]] = {}
    for r in runs:
        v, seed = r.data.tags["variant"], int(r.data.tags["seed"])
        acc.setdefault(v, {})[seed] = r.data.metrics["test/acc"]
        val.setdefault(v, []).append(r.data.metrics["best_val_acc"])
    for v in PICK_VARIANTS:
        assert summary.loc[v].test_acc_mean == pytest.approx(np.mean(list(acc[v].values())))
        assert summary.loc[v].best_val_acc_mean == pytest.approx(np.mean(val[v]))
    best_cnn = max(("cnn_baseline", "cnn_batchnorm"), key=lambda v: np.mean(val[v]))
    best_mlp = max(("mlp_baseline", "mlp_zscore"), key=lambda v: np.mean(val[v]))
    assert best_cnn == "cnn_batchnorm" and np.mean(list(acc["cnn_baseline"].values())) > np.mean(
        list(acc["cnn_batchnorm"].values()))  # chosen on validation, not on test
    for claim, cnn, mlp in (("the CNN beats the MLP (best of each, chosen on validation)", best_cnn, best_mlp),
                            ("the CNN beats the MLP (baselines)", "cnn_baseline", "mlp_baseline")):
        row = claims[claims.claim == claim].iloc[0]
        assert row.model == f"{cnn} vs {mlp}"
        d = 100 * np.array([acc[cnn][s] - acc[mlp][s] for s in (0, 1, 2)])
        half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        assert (row.effect_mean, row.ci_low, row.ci_high) == (pytest.approx(d.mean()), pytest.approx(d.mean() - half),
                                                              pytest.approx(d.mean() + half))
    bn = claims[claims.model == "cnn: cnn_batchnorm vs cnn_baseline"].iloc[0]
    d = 100 * np.array([acc["cnn_batchnorm"][s] - acc["cnn_baseline"][s] for s in (0, 1, 2)])
    assert bn.effect_mean == pytest.approx(d.mean()) and bn.unadjusted_verdict == "contradicted"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "cnn_batchnorm vs mlp_zscore" in html


PICK_VARIANTS = ("mlp_baseline", "mlp_zscore", "cnn_baseline", "cnn_batchnorm")


def test_long_row_labels_keep_the_ablation_figure_inside_its_canvas():
    # The cpu study's CNN panel once cut its own title and axis label at the right edge: its long row
    # labels pushed it out of the canvas.
    from cnnlab.figures import overflow_pixels
    from cnnlab.report.study_figures import ablation_figure

    adds = ["batch normalization and a global-average head (Problema 2)", "L2 regularization (limited)",
            "data augmentation (limited)", "all together"]
    ablation = pd.DataFrame({"model": ["mlp"] * 4 + ["cnn"] * 4, "variant": [f"v{i}" for i in range(8)],
                             "adds": adds * 2, "combined": [False, False, False, True] * 2,
                             "delta_mean": [0.01, -0.02, 0.03, 0.05] * 2, "delta_std": [0.01] * 8, "n_pairs": [4] * 8})
    table = pd.DataFrame({"model": ["mlp", "cnn"], "variant": ["v0", "v4"]})
    assert overflow_pixels(ablation_figure(ablation, table)) == 0
    # The check itself sees a cut-off label.
    from cnnlab.figures import plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=100)
    ax.set_xlabel("a label far too long to fit the width of a two-inch figure at all")
    assert overflow_pixels(fig) > 1
    plt.close("all")
