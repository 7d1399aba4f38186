"""Every study composes and builds; bad config ends with one clear sentence, no traceback."""

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.models import build_network, count_parameters
from cnnlab.study.studies import available_studies, compose_config, load_study
from tests.helpers import REPO, run, train_cmd


@pytest.mark.parametrize("study", available_studies())
def test_every_variant_of_every_study_composes_and_builds(study):
    st = load_study(study)
    assert st.variants and st.seeds
    for name in st.variants:
        cfg = compose_config(study=study, variant=name, seed=st.seeds[0])
        assert cfg.run.variant == name and cfg.run.study == study
        net = build_network(cfg.model)
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_lecture_study_has_baselines_each_optimization_in_its_regime_and_all_for_both_families():
    st = load_study("lecture")
    assert st.seeds == (0, 1, 2, 3, 4) and st.regimes["limited"].seeds == (0, 1, 2, 3, 4)
    in_regime = {"full": {"zscore", "adaptive_lr", "batch_norm"}, "limited": {"augmentation", "l1", "l2", "dropout"}}
    for family in ("mlp", "cnn"):
        names = {v for v in st.variants if v.startswith(family + "_")} - {"cnn_gap"}
        expected = {"baseline", "limited_baseline", "zscore", "augment", "adaptive_lr", "l1", "l2", "dropout",
                    "batchnorm", "all"}
        assert names == {f"{family}_{k}" for k in expected}
        assert st.variants[f"{family}_baseline"].baseline and st.variants[f"{family}_all"].combined
        assert st.variants[f"{family}_limited_baseline"].baseline
        for regime, optimizations in in_regime.items():
            variants = [v for v in st.variants.values()
                        if v.name.startswith(family) and v.optimization in optimizations]
            assert {v.optimization for v in variants} == optimizations
            assert {v.regime for v in variants} == {regime}  # each optimization is tested in one regime only
            assert {st.baseline_of(v.name) for v in variants} == {
                f"{family}_baseline" if regime == "full" else f"{family}_limited_baseline"}
        assert st.variants[f"{family}_all"].regime == "full"
    base = compose_config(study="lecture", variant="mlp_baseline", seed=0)
    assert base.data.normalize == "unit" and base.augment.translate == 0 and not base.augment.flip
    assert base.optimizer._target_ == "torch.optim.SGD" and base.optimizer.momentum == 0
    assert base.schedule._target_ == "cnnlab.optim.schedules.cosine" and base.schedule.final_lr == 0
    assert base.regularization.l1 == 0 and base.regularization.l2 == 0 and base.data.train_subset == 0
    limited = compose_config(study="lecture", variant="cnn_limited_baseline", seed=0)
    assert (limited.data.train_subset, limited.data.normalize, limited.augment.translate) == (5000, "zscore", 0)
    assert limited.optimizer._target_ == "torch.optim.SGD" and limited.regularization.l2 == 0
    l2 = compose_config(study="lecture", variant="cnn_l2", seed=0)
    assert (l2.data.train_subset, l2.data.normalize, l2.regularization.l2) == (5000, "zscore", 1e-4)
    quick = load_study("quick")
    assert set(quick.variants) == set(st.variants) and {len(quick.seeds_of(v)) for v in quick.variants} == {1}


def test_mlp_parameter_count_matches_hand_computation():
    cfg = compose_config(["model=mlp", "model.hidden=[100,50]"])
    # 3072*100 + 100, 100*50 + 50, 50*10 + 10
    assert count_parameters(build_network(cfg.model)) == 3072 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10


def test_cnn_parameter_count_matches_hand_computation():
    cfg = compose_config(["model=cnn", "model.channels=[8,16]", "model.hidden=[32]"])
    conv = (3 * 8 * 9 + 8) + (8 * 16 * 9 + 16)
    # 32 -> pool 16 -> pool 8: 16 channels * 8 * 8 features
    fc = (16 * 8 * 8 * 32 + 32) + (32 * 10 + 10)
    assert count_parameters(build_network(cfg.model)) == conv + fc


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model=resnet"], "valid choices: cnn, fastcnn, mlp"),
        (["trainer.max_epoch=3"], "Unknown config key 'trainer.max_epoch'; valid keys there:"),
        (["trainer.max_epochs=many"], "Bad value for 'trainer.max_epochs'"),
        (["model=cnn", "model.padding_mode=mirror"], "valid choices: zeros, replicate, circular"),
        (
            ["model=cnn", "model.chanels=[8]"],
            "Unknown config key 'model.chanels'; valid keys there: activation, batch_norm, channels,",
        ),
        (["model.dropout=1.5"], "'dropout' must be at least 0 and below 1, not 1.5"),
        (["optimizer=rmsprop"], "valid choices: adam, adamw, sgd, sgd_momentum"),
        (["optimizer.lr=-1"], "Bad optimizer config: Invalid learning rate: -1"),
        (
            ["optimizer.momentom=0.9"],
            "Unknown config key 'optimizer.momentom'; valid keys there: lr, momentum, weight_decay.",
        ),
        (
            ["schedule=step", "schedule.gama=0.5"],
            "Unknown config key 'schedule.gama'; valid keys there: gamma, step_size.",
        ),
        (
            ["+optimizer.momentom=0.9"],
            "Unknown config key 'optimizer.momentom' for SGD; valid keys there: lr, momentum,",
        ),
        (["trainer.accumulate_grad_batches=0"], "'trainer.accumulate_grad_batches' must be a whole number of at"),
        (["trainer.batch_size=-5"], "'trainer.batch_size' must be a whole number of at least 1, not -5"),
        (["trainer.check_val_every_n_epoch=0"], "'trainer.check_val_every_n_epoch' must be a whole number of epochs"),
        (
            ["trainer.max_epochs=12", "trainer.check_val_every_n_epoch=5"],
            "trainer.max_epochs=12 is not a multiple of trainer.check_val_every_n_epoch=5, so the last epoch would "
            "not be validated; make max_epochs a multiple of it, or set trainer.check_val_every_n_epoch=1.",
        ),
    ],
)
def test_bad_overrides_are_one_clear_sentence(overrides, fragment):
    with pytest.raises(UserError) as err:
        compose_config(overrides)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_a_limited_regime_run_takes_epochs_in_multiples_of_its_validation_interval():
    # The limited regime validates every 5th epoch (conf/study/lecture.yaml): its last epoch must be one.
    with pytest.raises(UserError, match="trainer.max_epochs=12 is not a multiple of trainer.check_val_every_n_epoch=5"):
        compose_config(["trainer.max_epochs=12"], study="cpu", variant="cnn_l1")
    assert compose_config(["trainer.max_epochs=15"], study="cpu", variant="cnn_l1").trainer.check_val_every_n_epoch == 5
    assert compose_config(study="cpu", variant="cnn_baseline").trainer.check_val_every_n_epoch == 1


def test_unknown_variant_and_study_list_the_valid_choices():
    with pytest.raises(UserError, match="Unknown variant 'cnn_huge' in study 'quick'; valid variants: mlp_baseline"):
        compose_config(study="quick", variant="cnn_huge")
    with pytest.raises(UserError, match=r"Unknown study 'nope'; valid studies: .*lecture.*quick"):
        load_study("nope")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["study=quick", "variant=cnn_huge"], "Unknown variant 'cnn_huge'"),
        (["study=nope"], "Unknown study 'nope'"),
        (["model=resnet"], "Could not find 'model/resnet'; valid choices: cnn, fastcnn, mlp"),
        (["trainer.max_epochs=x"], "Bad value for 'trainer.max_epochs'"),
        (["seed=-1"], "seed must be a non-negative integer"),
    ],
)
def test_cli_prints_one_line_without_traceback(tmp_path, args, fragment):
    proc = run(train_cmd(*args), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_broken_study_yaml_is_reported_with_its_line(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "study" / "broken.yaml").write_text("seeds: [0]\nvariants:\n  a:\n    overrides: [model.hidden=[8]]\n")
    with pytest.raises(UserError, match="not valid YAML at line 4; quote overrides"):
        load_study("broken", conf)


def test_a_bare_true_or_false_is_read_as_the_word():
    # Hydra reads `trainer.channels_last=true` as a boolean; the setting takes the words.
    assert compose_config(["trainer.channels_last=true"]).trainer.channels_last == "true"
    assert compose_config(["trainer.channels_last=false"]).trainer.channels_last == "false"


def _names_read_in(files) -> set[str]:
    """Every attribute name and string constant in the given Python files: how code reads a key
    (`cfg.trainer.threads`, `cfg["threads"]`, `OmegaConf.select(cfg, "trainer.threads")`)."""
    import ast

    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update({node.value, node.value.rsplit(".", 1)[-1]})
    return names


def _leaf_keys(node, prefix: str = "") -> list[str]:
    """The leaf keys of a config; a `_target_` node's keys are its class's arguments, checked
    against the class itself (cnnlab.targets), so it counts as one leaf."""
    from omegaconf import DictConfig

    keys = []
    for key in node:
        child = node[key]
        if isinstance(child, DictConfig) and "_target_" not in child:
            keys += _leaf_keys(child, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_every_setting_of_a_run_is_read_by_the_code():
    """A key of the composed config that no module reads is a dead setting: a user who sets it
    changes nothing. The schema's own module (which only declares and checks keys) does not count."""
    schema_module = REPO / "src" / "cnnlab" / "study" / "config.py"
    read = _names_read_in(p for p in (REPO / "src").rglob("*.py") if p != schema_module)
    cfg = compose_config()
    leaves = _leaf_keys(cfg)
    assert "trainer.flush_denormal" in leaves and "model" in leaves  # the walk reaches both kinds
    dead = [k for k in leaves if k.rsplit(".", 1)[-1] not in read]
    assert not dead, f"settings no code reads (remove them, or use them): {dead}"


def test_every_workflow_setting_is_read_by_the_workflow():
    """Each key of workflow/config.yaml is read by the Snakefile or a rule file, and the schema
    that validates it describes exactly those keys."""
    import re

    import yaml

    config = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]) == set(config) == set(schema["required"])
    text = "\n".join(p.read_text() for p in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")])
    read = set(re.findall(r"""["'](\w+)["']""", text))  # config["key"], or a key in a list of them
    assert set(config) - read == set(), f"workflow settings no rule reads: {sorted(set(config) - read)}"
