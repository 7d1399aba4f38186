"""`cnnlab-train` as a Hydra application: --help, --cfg, -m sweeps, shell completion, variants as configs."""

import shutil

import pytest
import yaml
from mlflow import MlflowClient
from omegaconf import OmegaConf

from cnnlab.errors import UserError
from cnnlab.study.studies import CONF_DIR, _compose, available_studies, compose_config, load_study
from cnnlab.training import command_line
from tests.helpers import read_json, run, tiny_prepared, train_cmd


def test_help_lists_the_config_groups_and_their_options(tmp_path):
    proc = run(train_cmd("--help"), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "== Configuration groups ==" in out
    for line in (
        "model: cnn, fastcnn, mlp",
        "optimizer: adam, adamw, sgd, sgd_momentum",
        "schedule: constant, cosine, onecycle, plateau, step",
        "study: cpu, cpu_fp32, cpu_tuning, lecture, lecture_tuning, quick, smoke, speedrun",
        "trainer: ddp, default",
    ):
        assert line in out
    assert "hydra/" not in out  # Hydra's own groups are under --hydra-help
    assert "trainer:\n  max_epochs: 10" in out  # the config, to override any key of
    with_study = run(train_cmd("--help", "study=smoke"), cwd=tmp_path, timeout=180)
    assert "variant: cnn_baseline, mlp_baseline" in with_study.stdout
    assert list(tmp_path.iterdir()) == []


def test_cfg_job_prints_the_composed_config_and_trains_nothing(tmp_path):
    proc = run(train_cmd("--cfg", "job", "study=quick", "variant=cnn_all", "seed=3"), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    expected = compose_config(["trainer.progress_bar=false"], study="quick", variant="cnn_all", seed=3)
    assert printed == OmegaConf.to_container(expected)
    assert printed["model"]["channels"] == [16, 32, 64]  # quick's budget, over the lecture's variant
    assert printed["run"]["variant"] == "cnn_all" and printed["seed"] == 3
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["model=mlp,cnn"], "'model=mlp,cnn' lists several values: add -m (--multirun)"),
        (["-m", "model=mlp,resnet"], "Could not find 'model/resnet'; valid choices: cnn, fastcnn, mlp"),
        (["-m", "seed=0,1", "trainer.max_epoch=3"], "Unknown config key 'trainer.max_epoch'"),
        (["-m", "study=smoke", "variant=mlp_baseline,cnn_huge"], "Unknown variant 'cnn_huge' in study 'smoke'"),
        (["-m", "study=quick,smoke"], "study= names one study"),
        (["-m", "trainer=ddp", "model=mlp,cnn"], "trainer.strategy=ddp starts its processes by running the command"),
        (["-m", "seed=0,1", "run.dir=x"], "run.dir does not apply under -m"),
        (["--cfg", "job", "optimizer.lr=-1"], "Bad optimizer config: Invalid learning rate: -1"),
        (["variant=cnn_all"], "variant=cnn_all needs study= too"),
        (["tracking.uri=a", "b"], "Cannot read the override 'b' (Error parsing override 'b'); write key=value"),
    ],
)
def test_each_job_of_a_command_is_checked_before_it_starts(args, fragment):
    with pytest.raises(UserError) as err:
        command_line.prepare(args)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_mistake_in_a_sweep_ends_the_command_with_one_sentence(tmp_path):
    proc = run(train_cmd("-m", "seed=0,1", "model=mlp,resnet"), cwd=tmp_path, timeout=180)
    assert proc.returncode == 2
    expected = "cnnlab-train: error: In 'config': Could not find 'model/resnet'; valid choices: cnn, fastcnn, mlp"
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []  # checked before Hydra makes a folder


def test_a_sweep_runs_each_job_in_its_folder_tracked_and_grouped_in_mlflow(tmp_path):
    arrays = tiny_prepared(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run(train_cmd("-m", "study=smoke", "variant=mlp_baseline,cnn_baseline", "trainer.max_epochs=1",
                         f"data.arrays={arrays}", f"tracking.uri={uri}"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "results" / "sweeps").iterdir()
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    results = [read_json(sweep / job / "result.json") for job in ("0", "1")]
    assert [r["variant"] for r in results] == ["mlp_baseline", "cnn_baseline"]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.`cnnlab.kind` = 'train'")
    assert {r.info.run_id for r in runs} == {r["mlflow_run_id"] for r in results}
    assert all(r.info.status == "FINISHED" for r in runs)
    sweep_id = str(sweep.relative_to(tmp_path))
    assert {r.data.tags["cnnlab.sweep"] for r in runs} == {sweep_id}
    grouped = client.search_runs([runs[0].info.experiment_id], f"tags.`cnnlab.sweep` = '{sweep_id}'")
    assert len(grouped) == 2
    assert {r.data.params["run.dir"] for r in runs} == {f"{sweep_id}/0", f"{sweep_id}/1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mlartifacts", "mlflow.db", "results"]


def test_shell_completion_offers_groups_and_options(tmp_path):
    proc = run(train_cmd("-sc", "query=bash"), cwd=tmp_path, timeout=180,
               env={"COMP_LINE": "cnnlab-train optimizer=sg", "COMP_POINT": "26"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(proc.stdout.split()) == {"optimizer=sgd", "optimizer=sgd_momentum"}


@pytest.mark.parametrize("study", available_studies())
def test_a_variant_config_composes_as_its_overrides_do(study):
    """`variant=<name>` (a Hydra config made from the study file) gives what the variant's overrides give."""
    st = load_study(study)
    for name in st.variants:
        by_config = compose_config(study=study, variant=name)
        by_overrides = _compose([*st.overrides_for(name), f"run.study={study}", f"run.variant={name}"], CONF_DIR)
        assert OmegaConf.to_container(by_config) == OmegaConf.to_container(by_overrides), name


def test_a_variant_that_chooses_a_group_twice_gets_the_last_choice(tmp_path):
    """As on a command line: the study's optimizer=adam, then the variant's optimizer=sgd."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "study" / "twice.yaml").write_text(
        "seeds: [0]\noverrides: [optimizer=adam, trainer.max_epochs=2]\nvariants:\n"
        "  plain:\n    overrides: [model=mlp, optimizer=sgd, optimizer.lr=0.5, model=cnn, model=mlp]\n"
    )
    cfg = compose_config(study="twice", variant="plain", conf_dir=conf)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.5
    assert cfg.model._target_ == "cnnlab.models.mlp.MLP"
    by_overrides = _compose([*load_study("twice", conf).overrides_for("plain"), "run.study=twice",
                             "run.variant=plain"], conf)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(by_overrides)
