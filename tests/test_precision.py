"""trainer.precision: what `auto` chooses on each machine, how the choice reaches a run, MLflow and the report.

The CPU's flags are given through CNNLAB_CPU_FLAGS and the workflow's measured speed-ups through
CNNLAB_BF16_SPEEDUP, as the workflow hands them; real training on a tiny prepared data set.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient

from cnnlab.report.runs import RunRecord
from cnnlab.report.sections import provenance
from cnnlab.study import estimate
from cnnlab.study.precision import CPU_FLAGS_VARIABLE, SPEEDUP_VARIABLE, PrecisionChoice, choose, cpu_flags
from cnnlab.study.studies import CONF_DIR, compose_config
from cnnlab.training.rundir import RunDir
from cnnlab.training.train import train
from cnnlab.training.trainer import choose_precision
from tests.helpers import record_forward_passes, tiny_run_config

NATIVE = {"avx512f", "avx512_bf16"}


def never_measured() -> float:
    raise AssertionError("measured where nothing needed measuring")


def test_an_explicit_setting_wins_everywhere(monkeypatch):
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"mlp": 2.0}))
    assert choose("32-true", "cpu", "mlp", never_measured, flags=NATIVE, gpu=None).precision == "32-true"
    assert choose("bf16-mixed", "cpu", "mlp", never_measured, flags=set(), gpu=None).precision == "bf16-mixed"
    assert choose("32-true", "auto", "mlp", never_measured, gpu=True) == PrecisionChoice("32-true", "the setting")


def test_the_gpu_keeps_its_own_default_whatever_the_cpu():
    assert choose("auto", "auto", "cnn", never_measured, flags=NATIVE, gpu=True).precision == "bf16-mixed"
    assert choose("auto", "auto", "cnn", never_measured, flags=NATIVE, gpu=False).precision == "32-true"


def test_a_cpu_without_native_bf16_trains_in_fp32_unmeasured(monkeypatch):
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"cnn": 3.0}))  # another machine's figure changes nothing
    choice = choose("auto", "cpu", "cnn", never_measured, flags={"avx512f", "avx2"}, gpu=None)
    assert choice == PrecisionChoice("32-true", "CPU without native bf16")


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
@pytest.mark.parametrize("speedup, expected", [(1.6, "bf16-mixed"), (1.02, "32-true"), (0.7, "32-true")])
def test_a_cpu_with_native_bf16_follows_the_workflows_probe(monkeypatch, flag, speedup, expected):
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"mlp": speedup, "cnn": 1.0}))
    choice = choose("auto", "cpu", "mlp", never_measured, flags={flag}, gpu=None)
    assert choice.precision == expected and choice.bf16_speedup == speedup
    assert flag in choice.chosen_by and "workflow's start" in choice.chosen_by
    assert choice.params()["precision_bf16_speedup"] == f"{speedup:.2f}"


def test_a_job_started_by_hand_measures_its_own_network(monkeypatch):
    monkeypatch.delenv(SPEEDUP_VARIABLE, raising=False)
    assert choose("auto", "cpu", "mlp", lambda: 1.5, flags=NATIVE, gpu=None).precision == "bf16-mixed"
    slower = choose("auto", "cpu", "mlp", lambda: 0.9, flags=NATIVE, gpu=None)
    assert slower.precision == "32-true" and slower.chosen_by == "CPU with avx512_bf16, bf16 not faster in this job"
    assert choose("auto", "cpu", "mlp", None, flags=NATIVE, gpu=None).precision == "32-true"


def test_the_cpu_flags_come_from_cpuinfo_unless_given(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    monkeypatch.delenv(CPU_FLAGS_VARIABLE)
    assert {"amx_bf16", "avx512f"} <= cpu_flags(cpuinfo) and cpu_flags(tmp_path / "missing") == set()
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    assert cpu_flags(cpuinfo) == {"avx512_bf16"}


def test_the_estimate_measures_each_family_once_and_times_it_in_its_precision(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    measured, timed = [], []
    monkeypatch.setattr(estimate, "bf16_speedup", lambda cfg, device: measured.append(cfg.model._target_) or 1.5)
    monkeypatch.setattr(estimate, "images_per_second", lambda cfg, device, bf16: timed.append(bf16) or 1000.0)
    jobs = [estimate.Job("cpu", v, compose_config(study="cpu", variant=v, conf_dir=CONF_DIR))
            for v in ("mlp_baseline", "mlp_l1", "cnn_baseline", "cnn_batchnorm")]
    said = []
    result = estimate.estimate(jobs, 2, torch.device("cpu"), 45000, 5000)
    assert len(measured) == 2 and set(timed) == {True}
    assert {f: c.precision for f, c in result["precision"].items()} == {"mlp": "bf16-mixed", "cnn": "bf16-mixed"}
    assert estimate.bf16_speedups(result) == {"mlp": 1.5, "cnn": 1.5}
    monkeypatch.setattr(estimate, "estimate", lambda *a: result)
    estimate.announce([("cpu", "mlp_baseline", 0)], CONF_DIR, 2, 0, 45000, 5000, say=said.append)
    assert said[-2:] == [
        "cnnlab: mlp trains in bf16-mixed (CPU with avx512_bf16, bf16 faster at the workflow's start: 1.50x fp32's "
        "images/s) where trainer.precision=auto.",
        "cnnlab: cnn trains in bf16-mixed (CPU with avx512_bf16, bf16 faster at the workflow's start: 1.50x fp32's "
        "images/s) where trainer.precision=auto.",
    ]


def networks(cfg) -> tuple[str, str]:
    return repr(cfg.model), repr(cfg.optimizer)


@pytest.mark.parametrize("pending", [["mlp_adaptive_lr", "cnn_batchnorm", "mlp_baseline"], ["cnn_all", "mlp_all"]])
def test_the_probe_measures_each_familys_full_data_baseline_whichever_jobs_are_left(monkeypatch, pending):
    # Adam and batch norm gain less from bf16 than plain SGD: the family's choice must not hang on
    # which of its jobs Snakemake lists first, or on which are left to run.
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    monkeypatch.delenv(SPEEDUP_VARIABLE, raising=False)
    measured = []
    monkeypatch.setattr(estimate, "bf16_speedup", lambda cfg, device: measured.append(networks(cfg)) or 1.5)
    monkeypatch.setattr(estimate, "images_per_second", lambda cfg, device, bf16: 1000.0)
    estimate.announce([("cpu", v, 0) for v in pending], CONF_DIR, 2, 0, 45000, 5000, say=lambda line: None)
    baselines = [networks(compose_config(study="cpu", variant=v, conf_dir=CONF_DIR))
                 for v in ("mlp_baseline", "cnn_baseline")]
    assert measured == baselines


def test_a_study_with_an_explicit_precision_is_not_probed_and_says_so(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    monkeypatch.setattr(estimate, "bf16_speedup", lambda cfg, device: never_measured())
    timed = []
    monkeypatch.setattr(estimate, "images_per_second", lambda cfg, device, bf16: timed.append(bf16) or 1000.0)
    said = []
    result = estimate.announce([("cpu_fp32", "mlp_baseline", 0), ("cpu_fp32", "cnn_l2", 1)], CONF_DIR, 2, 0,
                               45000, 5000, say=said.append)
    assert result["precision"] == {} and set(timed) == {False}
    assert said[-2:] == ["cnnlab: mlp trains in 32-true where trainer.precision=32-true.",
                         "cnnlab: cnn trains in 32-true where trainer.precision=32-true."]


def test_each_round_of_the_probe_lasts_its_minimum():
    cfg = compose_config(["model=mlp", "model.hidden=[16]", "trainer.batch_size=8"])
    timed = estimate.TimedSteps(cfg, torch.device("cpu"))
    start = estimate.time.perf_counter()
    timed.images_per_second(1, min_seconds=0.05)
    assert estimate.time.perf_counter() - start >= 0.05


def test_the_probe_measures_both_precisions_and_leaves_the_random_numbers_alone():
    cfg = compose_config(["model=mlp", "model.hidden=[16]", "trainer.batch_size=8"])
    torch.manual_seed(3)
    ratio = estimate.bf16_speedup(cfg, torch.device("cpu"), rounds=1, steps=1)
    drawn = torch.rand(1).item()
    torch.manual_seed(3)
    assert ratio > 0 and drawn == torch.rand(1).item()


def run_config(tmp_path, arrays, name, *overrides):
    return tiny_run_config(tmp_path, arrays, name, "trainer.max_epochs=1", *overrides)


@pytest.mark.parametrize("speedup, expected", [(1.5, "bf16-mixed"), (1.0, "32-true")])
def test_a_run_trains_in_the_chosen_precision_and_logs_it(tmp_path, arrays, monkeypatch, speedup, expected):
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"mlp": speedup}))
    dtypes = set()
    forward = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: dtypes.add((y := forward(self, x)).dtype) or y)
    result = train(run_config(tmp_path, arrays, "run"))
    params = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result["mlflow_run_id"]).data.params
    assert params["trainer.precision"] == "auto"  # the setting, and next to it what it resolved to
    assert params["precision_resolved"] == expected and params["precision_bf16_speedup"] == f"{speedup:.2f}"
    assert params["precision_chosen_by"].startswith("CPU with avx512_bf16, bf16 ")
    assert torch.bfloat16 in dtypes if expected == "bf16-mixed" else dtypes == {torch.float32}


def test_every_forward_pass_of_a_bf16_run_is_under_autocast(tmp_path, arrays, monkeypatch):
    # Training, validation, the train probe and the test alike: the train/validation gap compares
    # accuracies measured in one precision.
    seen = record_forward_passes(monkeypatch, lambda: torch.is_autocast_enabled("cpu"))
    train(run_config(tmp_path, arrays, "run", "trainer.precision=bf16-mixed", "data.train_probe_images=64"))
    assert {training for training, _ in seen} == {True, False}  # both kinds of pass were seen
    assert all(autocast for _, autocast in seen)


def test_a_resumed_run_keeps_the_precision_it_started_in(tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_VARIABLE, "avx512_bf16")
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"mlp": 1.5}))
    cfg = compose_config(["model=mlp"])
    run_dir = RunDir(tmp_path)
    assert choose_precision(cfg, run_dir).precision == "bf16-mixed"
    monkeypatch.setenv(SPEEDUP_VARIABLE, json.dumps({"mlp": 0.9}))  # a later probe that disagrees
    assert choose_precision(cfg, run_dir, resuming=True).precision == "bf16-mixed"
    assert choose_precision(cfg, run_dir, resuming=False).precision == "32-true"  # a new run measures anew


def test_the_report_shows_each_familys_precision(tmp_path):
    def record(model, i, **params):
        return RunRecord("v", i, "ok", run_id=f"r{model}{i}", tags={"model": model}, params=params)

    bf16 = {"precision_resolved": "bf16-mixed", "precision_bf16_speedup": "1.56",
            "precision_chosen_by": "CPU with avx512_bf16, bf16 faster at the workflow's start"}
    records = [record("mlp", 0, **bf16), record("mlp", 1, **bf16), record("cnn", 0, **{"trainer.precision": "auto"})]
    study = SimpleNamespace(name="s", extends=())
    page = "".join(provenance.render(SimpleNamespace(records=records, study=study, conf_dir=tmp_path)))
    assert ("mlp: bf16-mixed (CPU with avx512_bf16, bf16 faster at the workflow&#x27;s start: 1.56x fp32&#x27;s "
            "images/s) x2") in page
    assert "cnn: auto (not recorded) x1" in page


def write_report(workdir, study: str, accuracies: dict[str, list[float]], verdicts: dict[str, str]) -> None:
    """The three report tables bench.precision_accuracy reads, with the report's column names."""
    import pandas as pd

    report = workdir / "results" / study / "report"
    report.mkdir(parents=True)
    runs = [{"variant": v, "seed": s, "state": "ok", "test_acc": a} for v, accs in accuracies.items()
            for s, a in enumerate(accs)]
    pd.DataFrame(runs).to_csv(report / "runs.csv", index=False)
    summary = [{"variant": v, "test_acc_mean": sum(a) / len(a)} for v, a in accuracies.items()]
    pd.DataFrame(summary).to_csv(report / "summary.csv", index=False)
    claims = [{"claim": c, "model": "cnn", "effect_mean": 1.0, "verdict": v} for c, v in verdicts.items()]
    pd.DataFrame(claims).to_csv(report / "claims.csv", index=False)


def test_the_precision_comparison_flags_a_changed_verdict_and_a_mean_outside_the_seeds(tmp_path, capsys):
    from bench import precision_accuracy

    fp32 = {"cnn_baseline": [0.60, 0.62, 0.64], "cnn_l2": [0.70, 0.71, 0.72]}
    write_report(tmp_path, "cpu_fp32", fp32, {"L2 helps": "holds"})
    write_report(tmp_path, "same", {"cnn_baseline": [0.61, 0.62, 0.63], "cnn_l2": [0.71, 0.71, 0.71]},
                 {"L2 helps": "holds"})
    write_report(tmp_path, "moved", {"cnn_baseline": [0.66, 0.67, 0.68], "cnn_l2": [0.70, 0.71, 0.72]},
                 {"L2 helps": "inconclusive"})
    assert precision_accuracy.main(["--workdir", str(tmp_path), "--candidate", "same"]) == 0
    assert "verdicts changed: 0 of 1" in capsys.readouterr().out
    assert precision_accuracy.main(["--workdir", str(tmp_path), "--candidate", "moved"]) == 1
    out = capsys.readouterr().out
    assert "largest difference: +5.00 points (cnn_baseline" in out
    assert "outside the cpu_fp32 seeds' range: 1 of 2 (cnn_baseline)" in out and "verdicts changed: 1 of 1" in out
    with pytest.raises(SystemExit, match="run the absent study"):
        precision_accuracy.main(["--workdir", str(tmp_path), "--candidate", "absent"])
