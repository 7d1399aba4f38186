"""Every value is checked before any job starts and before any MLflow run exists: one sentence each,
naming the setting, the bad value and what is allowed."""

import shutil

import pytest

from cnnlab.errors import UserError
from cnnlab.study.config import check_accelerator
from cnnlab.study.studies import compose_config
from tests.helpers import SNAKEMAKE, copy_workflow, run, train_cmd

HAS_GPU = shutil.which("nvidia-smi") is not None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=mlp", "model.dropout=1.5"], "'dropout' must be at least 0 and below 1, not 1.5"),
        (["model=cnn", "model.dropout=-0.1"], "'dropout' must be at least 0 and below 1, not -0.1"),
        (["seed=99999999999"], "'seed' must be a whole number from 0 to 4294967295 (numpy's seed range), not 99999"),
        (["trainer.devices=0"], "'trainer.devices' must be a whole number of at least 1, not 0."),
        (["trainer.num_nodes=0"], "'trainer.num_nodes' must be a whole number of at least 1, not 0."),
        (["trainer.strategy=bogus"], "Unknown value 'bogus' for 'trainer.strategy'; valid choices: auto, ddp"),
        (["trainer.accelerator=abacus"], "Unknown value 'abacus' for 'trainer.accelerator'; valid choices: auto"),
        (
            ["data.train_images=-5"],
            "'data.train_images' must be 0 (all of them) or a positive number of images, not -5",
        ),
        (["data.train_probe_images=-1"], "'data.train_probe_images' must be 0 (none) or a positive number of images"),
        (["+trainer.max_epoch=3"], "Unknown config key 'trainer.max_epoch'; valid keys there: accelerator,"),
        (["+seeds=3"], "Unknown config key 'seeds'; valid keys there: augment, data,"),
        (["model.hidden=[8"], "Cannot read the override 'model.hidden=[8'"),
        (["=3"], "Cannot read the override '=3'"),
        (["trainer.limit_train_batches=1.5"], "'trainer.limit_train_batches' must be a fraction above 0 and at most 1"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_setting_and_what_is_allowed(overrides, expected):
    with pytest.raises(UserError) as e:
        compose_config(overrides)
    message = str(e.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["café", "ünï_2", "naïve"])
def test_a_non_ascii_variant_name_is_one_sentence(tmp_path, name):
    conf = copy_workflow(tmp_path / "wd").joinpath("conf")
    (conf / "study" / "odd.yaml").write_text(f"seeds: [0]\nvariants:\n  {name}:\n    overrides: [model=mlp]\n")
    with pytest.raises(UserError, match=f"variant name '{name}' must use only ASCII letters, digits and '_'"):
        compose_config(study="odd", variant=name, conf_dir=conf)


def test_an_accelerator_this_machine_lacks_is_refused_before_training():
    # The only fake here: how many GPUs the machine has (this one has none to ask for).
    gpu = compose_config(["trainer.accelerator=gpu"])
    with pytest.raises(UserError, match="trainer.accelerator=gpu needs a GPU and this machine has none"):
        check_accelerator(gpu, gpus=0)
    two = compose_config(["trainer.accelerator=cuda", "trainer.devices=2"])
    with pytest.raises(UserError, match=r"trainer.devices=2 asks for more GPUs than this machine has \(1\)"):
        check_accelerator(two, gpus=1)
    check_accelerator(compose_config(["trainer.accelerator=cpu"]), gpus=0)  # fine


@pytest.mark.parametrize(
    ("variant_overrides", "expected"),
    [
        ("[model=mlp, model.dropout=1.5]", "'dropout' must be at least 0 and below 1, not 1.5"),
        # More examples of the same class, each a whole snakemake start: in the slow run.
        pytest.param("[model=mlp, +trainer.max_epoch=3]", "Unknown config key 'trainer.max_epoch'",
                     marks=pytest.mark.slow),
        pytest.param("[model=mlp, trainer.accelerator=gpu]",
                     "trainer.accelerator=gpu needs a GPU and this machine has none", marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_the_workflow_stops_on_a_bad_value_before_any_job_or_store(tmp_path, variant_overrides, expected):
    if "accelerator=gpu" in variant_overrides and HAS_GPU:
        pytest.skip("this machine has a GPU: trainer.accelerator=gpu is fine here")
    study = f"seeds: [0]\nvariants:\n  bad:\n    overrides: {variant_overrides}\n"
    wd = copy_workflow(tmp_path / "wd", {"bad": study})
    proc = run([SNAKEMAKE, "--cores", "1", "--config", "study=bad"], cwd=wd)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in out, out[-2000:]
    assert "Traceback" not in out
    assert not (wd / "results").exists() and not (wd / "resources").exists()  # no job ran, no store exists


def test_cnnlab_train_refuses_bad_values_before_creating_the_store(tmp_path):
    db = tmp_path / "mlflow.db"
    for overrides, expected in [
        (["model=mlp", "model.dropout=2"], "'dropout' must be at least 0 and below 1, not 2"),
        (["trainer.strategy=bogus"], "Unknown value 'bogus' for 'trainer.strategy'"),
        (["trainer.accelerator=gpu"], "trainer.accelerator=gpu needs a GPU and this machine has none"),
        (["study=smoke", "variant=café"], "Cannot read the override 'variant=café'"),
    ]:
        if "accelerator=gpu" in overrides[0] and HAS_GPU:
            continue
        proc = run(train_cmd(*overrides, f"tracking.uri=sqlite:///{db}", f"run.dir={tmp_path / 'run'}"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr and "OverrideParseException" not in proc.stderr
        assert not db.exists() and not (tmp_path / "run").exists()
