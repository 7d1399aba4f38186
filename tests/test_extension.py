"""Growing the study without editing the package: a new model family, a new report figure.

Each is one Python module and one YAML file in folders of the user's own: the module goes on the
Python path, the YAML into a copy of `conf/`. Nothing under `src/cnnlab` is touched.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import pandas as pd
import pytest

from cnnlab.report import build_report
from cnnlab.study.studies import CONF_DIR, compose_config
from cnnlab.tracking.store import init_store
from cnnlab.training.train import train
from tests.helpers import REPO, SNAKEMAKE, copy_workflow, run, tiny_prepared

FAMILY_MODULE = '''
"""A family the package does not know: two convolutions and a global average."""
from torch import nn

from cnnlab.models import Network


class PatchNet(Network):
    architecture = "convolutional"

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=4), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
'''

FAMILY_YAML = """\
# A user's own family: patches of 4x4 pixels, then a global average.
_target_: patchnet.PatchNet
width: 8
"""

FIGURE_MODULE = '''
"""A figure the package does not know: test accuracy per variant as a bar chart."""
from cnnlab.figures import plt
from cnnlab.report.registry import Unavailable, figure


@figure("accuracy_bars", "Accuracy per variant", section="summary",
        caption="Test accuracy of every variant, one bar each.")
def draw(ctx):
    done = ctx.table[ctx.table.n_runs > 0]
    if not len(done):
        raise Unavailable("no run finished")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(done.variant, 100 * done.test_acc_mean)
    ax.set_ylabel("test accuracy (%)")
    return fig
'''

STUDY_YAML = """\
description: A study with a family and a figure of the user's own.
seeds: [0]
overrides: [trainer.max_epochs=2, trainer.batch_size=64]
variants:
  mlp_baseline: {adds: baseline, baseline: true, overrides: [model=mlp, "model.hidden=[16]", optimizer=adam]}
  patch_baseline: {adds: baseline, baseline: true, overrides: [model=patchnet, optimizer=adam]}
  patch_wide: {adds: twice the width, overrides: [model=patchnet, model.width=16, optimizer=adam]}
report:
  sensitivity_images: 40
  modules: [accuracy_bars]
"""


def user_files(root):
    """The user's module folder (on PYTHONPATH) and conf/ copy; returns (modules, conf)."""
    modules = root / "modules"
    modules.mkdir(parents=True)
    (modules / "patchnet.py").write_text(textwrap.dedent(FAMILY_MODULE))
    (modules / "accuracy_bars.py").write_text(textwrap.dedent(FIGURE_MODULE))
    conf = root / "conf"
    if not conf.exists():
        shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "patchnet.yaml").write_text(FAMILY_YAML)
    (conf / "study" / "extended.yaml").write_text(STUDY_YAML)
    return modules, conf


def test_a_new_family_and_figure_train_and_report_without_editing_the_package(tmp_path, monkeypatch):
    modules, conf = user_files(tmp_path)
    monkeypatch.syspath_prepend(str(modules))
    arrays = tiny_prepared(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, "extended", tmp_path / "artifacts")
    results = {}
    for variant in ("mlp_baseline", "patch_baseline", "patch_wide"):
        cfg = compose_config(
            [f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp_path / 'runs' / variant}",
             "trainer.progress_bar=false"],
            study="extended", variant=variant, seed=0, conf_dir=conf,
        )
        results[variant] = train(cfg)
    assert results["patch_baseline"]["model"] == "patchnet"
    assert results["patch_wide"]["params"] > results["patch_baseline"]["params"]

    report = build_report(uri, "extended", conf, arrays, tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("variant")
    assert table.loc["patch_wide", "model"] == "patchnet"
    assert table.loc["patch_wide", "architecture"] == "convolutional"
    assert table.loc["patch_wide", "test_acc_mean"] == pytest.approx(results["patch_wide"]["test_acc"])
    html = (tmp_path / "report" / "report.html").read_text()
    # The new family is compared with its own baseline, and the new figure is drawn and embedded.
    assert "twice the width" in html and "patch_wide" in html
    assert "accuracy_bars" in report["figures"] and "accuracy_bars" not in report["unavailable"]
    assert 'alt="Accuracy per variant"' in html and "Test accuracy of every variant, one bar each." in html
    assert (tmp_path / "report" / "accuracy_bars.png").read_bytes()[:4] == b"\x89PNG"


def report_rule_outputs(workdir, env) -> list[str]:
    """The build_report job's outputs, as a dry run of the real snakemake lists them."""
    proc = run([SNAKEMAKE, "-n", "--cores", "1", "-s", str(workdir / "Snakefile"), "--directory", str(workdir),
                "--config", "study=extended"], cwd=workdir, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "rule build_report:")
    output = next(line for line in lines[start:] if line.strip().startswith("output:"))
    return [p.strip() for p in output.split(":", 1)[1].split(",")]


def test_a_registered_figure_is_an_output_of_the_report_rule(tmp_path):
    wd = copy_workflow(tmp_path / "wd")
    modules, _ = user_files(wd)
    env = {"PYTHONPATH": os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")])}
    outputs = report_rule_outputs(wd, env)
    assert "results/extended/report/accuracy_bars.png" in outputs
    assert "results/extended/report/ablation.png" in outputs and "results/extended/report/report.html" in outputs


@pytest.mark.slow
def test_the_real_workflow_trains_the_new_family_and_draws_the_new_figure(tmp_path):
    from tests.tiny_cifar import write_tiny_archive

    wd = copy_workflow(tmp_path / "wd")
    modules, _ = user_files(wd)
    md5 = write_tiny_archive(tmp_path / "tiny.tar.gz", 100)
    env = {"PYTHONPATH": os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")])}
    proc = run([SNAKEMAKE, "--cores", "2", "-s", str(wd / "Snakefile"), "--directory", str(wd), "--config",
                "study=extended", f"data_url={tmp_path / 'tiny.tar.gz'}", f"data_md5={md5}", "train_records=500",
                "test_records=100", "val_size=100"], cwd=wd, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = wd / "results" / "extended" / "report"
    table = pd.read_csv(report / "summary.csv").set_index("variant")
    assert list(table.status) == ["ok", "ok", "ok"] and table.loc["patch_baseline", "model"] == "patchnet"
    assert 'alt="Accuracy per variant"' in (report / "report.html").read_text()
    assert (report / "accuracy_bars.png").is_file()
    assert not (REPO / "src" / "cnnlab" / "models" / "patchnet.py").exists()
