"""Studies that extend others, tuning studies, the values they choose, and the wall-time estimate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from cnnlab.errors import UserError
from cnnlab.report.sections import tuning as tuning_section
from cnnlab.study import estimate
from cnnlab.study.studies import CONF_DIR, compose_config, load_study
from cnnlab.study.tuning import choose, format_value, read_choices, tuned_override, write_choices


@pytest.fixture
def conf(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return conf


def test_a_budget_study_holds_only_what_changes(conf):
    cpu, lecture = load_study("cpu", conf), load_study("lecture", conf)
    assert cpu.extends == ("lecture",) and list(cpu.variants) == list(lecture.variants)
    assert cpu.variants["cnn_zscore"].overrides == lecture.variants["cnn_zscore"].overrides
    quick = load_study("quick", conf)
    assert quick.extends == ("cpu", "lecture") and quick.seeds == (0,) and quick.tuning_study is None
    assert quick.tuning.from_record == "cpu" and cpu.tuning_study == "cpu_tuning"
    cfg = compose_config(study="quick", variant="cnn_baseline", conf_dir=conf)
    # quick's own epochs come after cpu's, which come after lecture's 30.
    assert cfg.trainer.max_epochs == 2 and list(cfg.model.channels) == [16, 32, 64]


def test_a_child_can_drop_and_add_variants(conf):
    (conf / "study" / "child.yaml").write_text(
        "extends: smoke\nvariants:\n  cnn_baseline: null\n  mlp_wide: {adds: wider, overrides: [model=mlp]}\n")
    child = load_study("child", conf)
    assert list(child.variants) == ["mlp_baseline", "mlp_wide"]


def test_a_cycle_of_extends_is_one_sentence(conf):
    (conf / "study" / "a.yaml").write_text("extends: b\nvariants: {x: {overrides: []}}\n")
    (conf / "study" / "b.yaml").write_text("extends: a\n")
    with pytest.raises(UserError, match="extends itself through a -> b -> a"):
        load_study("a", conf)


def test_the_tuning_study_runs_each_grid_point_with_its_regimes_budget_last(conf):
    cpu, tuning = load_study("cpu", conf), load_study("cpu_tuning", conf)
    grids = cpu.tuning.grids
    expected = sum(len(g.values) for g in grids.values() if not g.same_as)
    assert len(tuning.variants) == expected and tuning.parent == "cpu"
    assert tuning.is_sweep and tuning.tuning_study is None and tuning.jobs()[0][1] == 1000
    assert all(tuning.seeds_of(v) == (1000,) for v in tuning.variants)  # no regime's seeds: the tuning's own
    rate = next(v for v in tuning.variants.values() if v.sweep_of == "cnn_baseline")
    cfg = compose_config(study="cpu_tuning", variant=rate.name, conf_dir=conf)
    # The cpu study gives the CNN 8 epochs; the tuning's own budget wins: 3, on every image.
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.data.train_subset) == (rate.sweep_value, 3, 0)
    assert cfg.trainer.if_loss_diverges == "record" and cfg.seed == 0  # the seed comes from the job
    dose = next(v for v in tuning.variants.values() if v.sweep_of == "mlp_l2")
    cfg = compose_config(study="cpu_tuning", variant=dose.name, conf_dir=conf)
    # A strength is tuned in the limited regime with that regime's whole budget and rate.
    assert (cfg.regularization.l2, cfg.data.train_subset, cfg.trainer.max_epochs, cfg.optimizer.lr) == (
        dose.sweep_value, 5000, 30, 0.1)
    assert dose.regime == "limited" and dose.sweep_key == "regularization.l2"


@pytest.mark.parametrize("tuning, message", [
    ("{grids: {mlp_baseline: {key: optimizer.lr, values: []}}}", "tuning grid 'mlp_baseline' must be"),
    ("{grids: {mlp_baseline: {key: optimizer.lr, values: [0.1, 0.1]}}}", "tuning grid 'mlp_baseline' must be"),
    ("{grids: {nope: {key: optimizer.lr, values: [0.1]}}}", "tuning grid variant 'nope' is not a variant"),
    ("{grids: {cnn_baseline: {same_as: mlp_baseline}}}", "is same_as 'mlp_baseline', which has no grid"),
    ("{tie_points: -1}", "'tuning.tie_points' must be a number"),
    ("{nope: 1}", "'tuning' has unknown keys"),
])
def test_a_bad_tuning_plan_is_one_sentence(conf, tuning, message):
    (conf / "study" / "bad.yaml").write_text(f"extends: smoke\ntuning: {tuning}\n")
    with pytest.raises(UserError, match=message):
        load_study("bad", conf)


def test_a_sweep_without_grids_is_one_sentence(conf):
    (conf / "study" / "bad.yaml").write_text("extends: smoke\nsweep: {overrides: []}\n")
    with pytest.raises(UserError, match="'sweep' needs the study it extends to have tuning grids"):
        load_study("bad", conf)


def made_up_choice(conf):
    """The choice from made-up validation accuracies over the cpu study's grids: each grid's best is its
    second value, except where a value diverged or two tie."""
    tuning = load_study("cpu_tuning", conf)
    acc = {}
    for name, point in tuning.variants.items():
        grid = tuning.tuning.grids[point.sweep_of].values
        acc[name] = [0.50 if grid.index(point.sweep_value) == 1 else 0.40]
    return tuning, acc


def test_the_best_validation_accuracy_wins_and_a_diverged_value_never_does(conf):
    tuning, acc = made_up_choice(conf)
    grid = tuning.tuning.grids["cnn_baseline"].values
    first, second = (n for n, p in tuning.variants.items() if p.sweep_of == "cnn_baseline"
                     and p.sweep_value in grid[:2])
    acc[second] = [0.5, float("nan"), 0.52]  # a diverged seed is left out of the mean
    acc[first] = [float("nan")]  # and a value that only diverged is never chosen
    chosen = choose(tuning, acc, 1.0, tuning.tuning.grids)
    assert chosen["cnn_baseline"]["value"] == grid[1] and chosen["cnn_baseline"]["setting"] == "optimizer.lr"
    assert chosen["cnn_baseline"]["candidates"][format_value(grid[1])] == pytest.approx(0.51)
    assert math.isnan(chosen["cnn_baseline"]["candidates"][format_value(grid[0])])
    assert chosen["mlp_l2"]["setting"] == "regularization.l2" and chosen["mlp_l2"]["edge"] is None
    # A variant tuned "same_as" another takes its choice, and says whose.
    assert chosen["cnn_gap"]["value"] == chosen["cnn_batchnorm"]["value"]
    assert chosen["cnn_gap"]["same_as"] == "cnn_batchnorm"


def test_a_tie_goes_to_the_first_value_listed_and_a_choice_at_the_grids_end_is_flagged(conf):
    tuning, acc = made_up_choice(conf)
    values = tuning.tuning.grids["mlp_dropout"].values
    names = [n for n, p in tuning.variants.items() if p.sweep_of == "mlp_dropout"]
    for name, a in zip(names, [0.455, 0.46, 0.44] + [0.30] * (len(names) - 3), strict=True):
        acc[name] = [a]  # the first two within 1 point: a tie, broken toward the first listed
    entry = choose(tuning, acc, 1.0, tuning.tuning.grids)["mlp_dropout"]
    assert (entry["best"], entry["value"], entry["tie"]) == (values[1], values[0], [values[0], values[1]])
    assert entry["edge"] == "first" and entry["lead"] == pytest.approx(0.5)
    said = tuning_section.how_clear(entry, 1.0)
    assert said.startswith(f"a tie: {format_value(values[0])}, {format_value(values[1])} within 1 points")
    for name, a in zip(names, [0.30] * (len(names) - 1) + [0.6], strict=True):
        acc[name] = [a]  # the best is the strongest: at the high edge
    entry = choose(tuning, acc, 1.0, tuning.tuning.grids)["mlp_dropout"]
    assert entry["value"] == values[-1] and entry["edge"] == "last" and entry["lead"] == pytest.approx(30.0)
    assert tuning_section.how_clear(entry, 1.0).startswith("ahead of the next by 30.0 points")


def test_each_run_takes_its_own_variants_chosen_value(conf, tmp_path):
    tuning, acc = made_up_choice(conf)
    path = tmp_path / "chosen.json"
    path.write_text(json.dumps(choose(tuning, acc, 1.0, tuning.tuning.grids)))
    grids = tuning.tuning.grids
    tuned = lambda v: compose_config([f"run.tuned={path}"], study="cpu", variant=v, conf_dir=conf)  # noqa: E731
    assert tuned("mlp_baseline").optimizer.lr == grids["mlp_baseline"].values[1]
    assert tuned("mlp_zscore").optimizer.lr == grids["mlp_zscore"].values[1]
    assert tuned("cnn_adaptive_lr").optimizer.lr == grids["cnn_adaptive_lr"].values[1]
    assert tuned("cnn_gap").optimizer.lr == grids["cnn_batchnorm"].values[1]
    assert tuned("mlp_l2").regularization.l2 == grids["mlp_l2"].values[1]
    assert tuned("cnn_dropout").model.dropout == grids["cnn_dropout"].values[1]
    # The limited regime's rate stands for its tuned strengths and its untuned baseline alike.
    assert tuned("mlp_l2").optimizer.lr == 0.1 and tuned("cnn_limited_baseline").optimizer.lr == 0.1
    # Without the file the variant's own fallback stands; the command line wins over the choice.
    assert compose_config(study="cpu", variant="mlp_baseline", conf_dir=conf).optimizer.lr == 0.01
    cfg = compose_config(["regularization.l2=0.5", f"run.tuned={path}"], study="cpu", variant="mlp_l2", conf_dir=conf)
    assert cfg.regularization.l2 == 0.5
    assert tuned_override("mlp_l2", read_choices(path), ["regularization.l2=0.5"]) is None
    assert tuned_override("mlp_l2", read_choices(path), []) == ("regularization.l2", grids["mlp_l2"].values[1])


def test_the_workflow_step_reads_result_files_and_refuses_a_variant_whose_every_value_diverged(conf, tmp_path):
    tuning, cpu = load_study("cpu_tuning", conf), load_study("cpu", conf)
    files = []
    for i, (name, point) in enumerate(tuning.variants.items()):
        f = tmp_path / f"r{i}.json"
        bad = point.sweep_of == "cnn_l1"
        f.write_text(json.dumps({"variant": name, "best_val_acc": float("nan") if bad else 0.3 + 0.01 * i}))
        files.append(str(f))
    with pytest.raises(UserError, match="Every run of the tuning study 'cpu_tuning' for cnn_l1 diverged or failed"):
        write_choices(tuning, cpu, files, tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()
    for f in files:  # every value of every grid finished
        result = json.loads(Path(f).read_text())
        Path(f).write_text(json.dumps({**result, "best_val_acc": 0.3}))
    chosen = write_choices(tuning, cpu, files, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(chosen))
    # All equal: a tie of the whole grid, broken toward its first value, which is at its edge.
    assert chosen["cnn_l1"]["value"] == cpu.tuning.grids["cnn_l1"].values[0] and chosen["cnn_l1"]["edge"] == "first"


def test_the_estimate_adds_epochs_over_measured_throughput_and_splits_the_jobs_over_slots(conf):
    cfg = compose_config(["trainer.max_epochs=4", "data.train_probe_images=1000"], conf_dir=conf)
    # 4 epochs x (45,000 trained + (5,000 + 1,000) / 3 evaluated) images at 1,000 images/s, plus the allowance.
    assert estimate.job_seconds(cfg, 1000.0, 45000, 5000) == pytest.approx(4 * 47.0 + estimate.JOB_OVERHEAD_S)
    # A limited regime's job: 4 x (5,000 + (5,000 + 1,000) / 3) images.
    limited = compose_config(["trainer.max_epochs=4", "data.train_probe_images=1000", "data.train_subset=5000"],
                             conf_dir=conf)
    assert estimate.job_seconds(limited, 1000.0, 45000, 5000) == pytest.approx(4 * 7.0 + estimate.JOB_OVERHEAD_S)
    assert estimate.images_per_second(cfg, estimate.torch.device("cpu"), steps=2) > 0
    jobs = [estimate.Job("s", f"v{i}", cfg) for i in range(4)]
    one, two = (estimate.estimate(jobs, slots, estimate.torch.device("cpu"), 45000, 5000) for slots in (1, 2))
    assert two["seconds"] == pytest.approx(one["seconds"] / 2, rel=0.5) and set(one["rates"]) == {"mlp"}


def test_the_estimate_counts_the_reports_network_tests(conf):
    # The report tests every seed of each network report.sensitivity lists on sensitivity_images images.
    cpu = load_study("cpu", conf)
    networks = sum(len(cpu.seeds_of(v)) for v in cpu.report["sensitivity"])
    assert networks == 3 * len(cpu.seeds)
    assert estimate.report_seconds(cpu) == pytest.approx(
        estimate.REPORT_BASE_S + estimate.REPORT_S_PER_IMAGE * networks * cpu.report["sensitivity_images"])
    assert estimate.report_seconds(load_study("smoke", conf)) == estimate.REPORT_BASE_S  # it lists none


def test_the_work_that_orders_jobs_counts_each_layers_flops_and_ranks_the_cpu_studys_jobs(conf):
    mlp = compose_config(["model=mlp", "model.hidden=[64,32]"], conf_dir=conf)
    # Two FLOPs per multiply-accumulate of each linear layer: 3,072 -> 64 -> 32 -> 10.
    assert estimate.forward_flops(mlp.model) == 2 * (3072 * 64 + 64 * 32 + 32 * 10)
    cnn = compose_config(["model=cnn", "model.channels=[8]", "model.hidden=[]"], conf_dir=conf)
    # A 3x3 convolution 3 -> 8 at 32 x 32 (padding 1), pooled to 16 x 16, then a linear 2,048 -> 10.
    assert estimate.forward_flops(cnn.model) == 2 * (32 * 32 * 8 * 3 * 9 + 8 * 16 * 16 * 10)
    cfg = compose_config(["model=mlp", "model.hidden=[64,32]", "trainer.max_epochs=3"], conf_dir=conf)
    assert estimate.training_work(cfg, 45000, 5000) == pytest.approx(
        estimate.trained_images(cfg, 45000, 5000) * estimate.forward_flops(cfg.model) / 1e9)
    # The cpu study: every CNN full-data job outweighs every MLP full-data job, which outweighs
    # every limited-regime job of its family.
    study = load_study("cpu", conf)
    work = {(v[:3], study.regime_of(v).name): [] for v in study.variants}
    for v in study.variants:
        cfg = compose_config(study="cpu", variant=v, conf_dir=conf)
        work[v[:3], study.regime_of(v).name].append(estimate.training_work(cfg, 45000, 5000))
    assert min(work["cnn", "full"]) > max(work["mlp", "full"]) > max(work["mlp", "limited"]) > 0
    assert min(work["cnn", "full"]) > max(work["cnn", "limited"])


@pytest.mark.slow  # measures the throughput of every network of three studies (about a minute)
def test_a_long_cpu_run_is_announced_with_the_smaller_studies(conf):
    # The lecture study's 30-epoch runs take many hours on any CPU: its estimate says so.
    said = []
    pending = [("lecture", v, s) for v in load_study("lecture", conf).variants for s in (0, 1, 2)]
    estimate.announce(pending, conf, slots=2, gpus=0, n_train=45000, n_eval=5000, say=said.append)
    assert said[0].startswith(
        f"cnnlab: {len(pending)} training jobs to run (lecture); estimated wall time on this machine")
    assert "more than 2 hours without a GPU" in said[1]
    assert "--config study=quick (about" in said[1] and "--config study=cpu (about" in said[1]


@pytest.mark.parametrize("name", ["lecture", "cpu"])
def test_the_plan_tunes_every_optimization_fairly_and_wide_enough(name):
    # Every full-data variant tunes its own rate; every regularizer and augmentation its own strength
    # in the limited regime; L1 and L2 grids span two orders of magnitude or more, dropout light to heavy.
    study = load_study(name)
    grids = study.tuning.grids
    for v in study.variants.values():
        grid = grids.get(v.name)
        assert grid is not None or (v.baseline and v.regime == "limited"), v.name
        if grid is None or grid.same_as:
            continue
        if v.regime == "full":
            assert grid.key == "optimizer.lr" and list(grid.values) == sorted(grid.values), v.name  # the smallest first
        else:
            assert grid.key != "optimizer.lr" and list(grid.values) == sorted(grid.values, reverse=True), v.name
        if v.optimization in ("l1", "l2"):
            assert max(grid.values) / min(grid.values) >= 100, v.name
        if v.optimization == "dropout":
            assert min(grid.values) <= 0.1 and max(grid.values) >= 0.5, v.name
    assert grids["cnn_gap"].same_as == "cnn_batchnorm"
    # Each grid's choice is made where its claim is tested: the tuning study's point trains in that regime.
    tuning = load_study(study.tuning_study)
    for point in tuning.variants.values():
        assert point.regime == study.variants[point.sweep_of].regime
