"""Studies that extend others, learning-rate sweeps, the rates they choose, and the wall-time estimate."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from cnnlab.errors import UserError
from cnnlab.report.sections import tuning as tuning_section
from cnnlab.study import estimate
from cnnlab.study.studies import CONF_DIR, compose_config, load_study, variant_composer
from cnnlab.study.tuning import choose, read_learning_rates, tuned_override, write_learning_rates


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
    assert quick.extends == ("cpu", "lecture") and quick.seeds == (0,) and quick.tune_lr == "cpu_lr_sweep"
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


def test_a_sweep_expands_each_variant_at_each_value_with_its_budget_last(conf):
    sweep = load_study("cpu_lr_sweep", conf)
    assert set(sweep.variants) == {
        f"{f}_baseline_lr_{v}" for f in ("mlp", "cnn") for v in ("0_03", "0_1", "0_3")
    }
    point = sweep.variants["cnn_baseline_lr_0_3"]
    assert (point.sweep_of, point.sweep_value, sweep.sweep_key, sweep.tune_lr) == (
        "cnn_baseline", 0.3, "optimizer.lr", None)
    cfg = compose_config(study="cpu_lr_sweep", variant="cnn_baseline_lr_0_3", conf_dir=conf)
    # The cpu study gives the CNN 8 epochs; the sweep's own budget wins: the first 3, on every image.
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.data.train_images, cfg.data.train_subset) == (0.3, 3, 0, 0)
    assert cfg.trainer.if_loss_diverges == "record" and sweep.sweep_tie_points == 1.0


@pytest.mark.parametrize("sweep, message", [
    ("{key: optimizer.lr, values: []}", r"'sweep' needs key \(a setting\), values \(a list\) and variants"),
    ("{key: optimizer.lr, values: [0.1], variants: [nope]}", "sweep variant 'nope' is not a variant"),
])
def test_a_bad_sweep_is_one_sentence(conf, sweep, message):
    (conf / "study" / "bad.yaml").write_text(f"extends: smoke\nsweep: {sweep}\n")
    with pytest.raises(UserError, match=message):
        load_study("bad", conf)


def chosen_rates(conf):
    """The choice from made-up validation accuracies: the MLP best at 0.1, the CNN at 0.03 (0.3 diverged)."""
    sweep = load_study("cpu_lr_sweep", conf)
    acc = {"mlp_baseline_lr_0_03": [0.35], "mlp_baseline_lr_0_1": [0.41], "mlp_baseline_lr_0_3": [0.38],
           "cnn_baseline_lr_0_03": [0.45, 0.47], "cnn_baseline_lr_0_1": [0.44], "cnn_baseline_lr_0_3": [math.nan]}
    return choose(sweep, acc, variant_composer(sweep, conf))


def test_the_best_validation_accuracy_wins_and_a_diverged_rate_never_does(conf):
    rates = chosen_rates(conf)
    assert rates["mlp"]["value"] == 0.1 and rates["cnn"]["value"] == 0.03
    assert rates["cnn"]["candidates"]["0.03"] == pytest.approx(0.46)  # the mean over its seeds
    assert math.isnan(rates["cnn"]["candidates"]["0.3"])
    assert rates["cnn"]["optimizer"] == "torch.optim.SGD" and rates["cnn"]["setting"] == "optimizer.lr"


def test_the_choice_says_how_clear_it_is_and_a_tie_goes_to_the_first_value_listed(conf):
    sweep = load_study("cpu_lr_sweep", conf)
    # The CNN's three rates as measured on the sweep's budget (seed 0, docs/notes.md): 0.3 ahead by 2.6 points.
    acc = {"cnn_baseline_lr_0_03": [0.2920], "cnn_baseline_lr_0_1": [0.4424], "cnn_baseline_lr_0_3": [0.4686],
           # The MLP's best two within 1 point: a tie, broken toward the first listed (the smaller rate).
           "mlp_baseline_lr_0_03": [0.301], "mlp_baseline_lr_0_1": [0.305], "mlp_baseline_lr_0_3": [0.20]}
    rates = choose(sweep, acc, variant_composer(sweep, conf))
    assert rates["cnn"]["value"] == 0.3 and rates["cnn"]["tie"] == [0.3]
    assert rates["cnn"]["lead"] == pytest.approx(2.62)
    assert (rates["mlp"]["best"], rates["mlp"]["value"], rates["mlp"]["tie"]) == (0.1, 0.03, [0.03, 0.1])
    assert tuning_section.how_clear(rates["cnn"], 1.0).startswith("ahead of the next by 2.6 points")
    said = tuning_section.how_clear(rates["mlp"], 1.0)
    assert said.startswith("a tie: 0.03, 0.1 within 1 points of the best (0.1)") and said.endswith("first listed, 0.03")


def test_runs_of_the_same_family_and_optimizer_take_the_chosen_rate(conf, tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(chosen_rates(conf)))
    tuned = lambda v: compose_config([f"run.learning_rates={path}"], study="cpu", variant=v, conf_dir=conf)  # noqa: E731
    assert tuned("mlp_baseline").optimizer.lr == 0.1 and tuned("mlp_zscore").optimizer.lr == 0.1
    assert tuned("cnn_batchnorm").optimizer.lr == 0.03 and tuned("cnn_gap").optimizer.lr == 0.03
    # The limited regime sets its own rates (test_regimes.py): the sweep's do not replace them.
    assert tuned("mlp_l2").optimizer.lr == 0.03 and tuned("cnn_dropout").optimizer.lr == 0.1
    # Adam keeps its own rate; without the file the config's rate stands.
    assert tuned("cnn_adaptive_lr").optimizer.lr == 0.001 and tuned("mlp_all").optimizer.lr == 0.001
    assert compose_config(study="cpu", variant="mlp_baseline", conf_dir=conf).optimizer.lr == 0.01
    # A variant that sets the rate itself keeps it.
    cfg = compose_config(["optimizer.lr=0.5", f"run.learning_rates={path}"], study="cpu", variant="mlp_l1",
                         conf_dir=conf)
    assert cfg.optimizer.lr == 0.5 and tuned_override(cfg, read_learning_rates(path), ["optimizer.lr=0.5"]) is None
    assert tuned_override(cfg, read_learning_rates(path), []) == ("optimizer.lr", 0.1)


def test_the_workflow_step_reads_result_files_and_refuses_a_sweep_that_all_diverged(conf, tmp_path):
    sweep = load_study("cpu_lr_sweep", conf)
    files = []
    for i, (variant, acc) in enumerate([("mlp_baseline_lr_0_03", 0.4), ("mlp_baseline_lr_0_1", 0.5),
                                         ("cnn_baseline_lr_0_1", float("nan"))]):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps({"variant": variant, "best_val_acc": acc}))
        files.append(str(f))
    rates = write_learning_rates(sweep, files, variant_composer(sweep, conf), tmp_path / "out.json")
    assert rates["mlp"]["value"] == 0.1 and rates["cnn"]["value"] is None
    assert json.loads((tmp_path / "out.json").read_text())["mlp"]["value"] == 0.1
    with pytest.raises(UserError, match="Every run of the sweep study 'cpu_lr_sweep' diverged or failed"):
        write_learning_rates(sweep, files[2:], variant_composer(sweep, conf), tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()


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
