"""Shared test helpers: tiny prepared data, a copy of the workflow, running real commands, required facilities."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.data.preprocess import prepare
from tests.tiny_cifar import write_tiny_archive

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"  # .ci/run exports CI=true


def require(available: bool, why: str) -> None:
    """Go on if a test's real facility (tmpfs mount, SLURM, Chromium) is there; else skip saying why.

    Under CI, which sets every facility up (root, .ci/slurm/start.sh, apt packages), a missing one
    fails the test instead: a skip there would leave the run green without the real case.
    """
    __tracebackhide__ = True  # pytest reports the skip at the caller's line
    if available:
        return
    if in_ci():
        pytest.fail(f"CI must run this test's real case, but {why}", pytrace=False)
    pytest.skip(why)


def tiny_prepared(folder: Path, n_per_batch: int = 100, val_size: int = 100) -> Path:
    """A tiny archive prepared into folder/data/cifar10.npz (+ .json); returns the npz path."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "tiny.tar.gz"
    md5 = write_tiny_archive(archive, n_per_batch)
    arrays = folder / "data" / "cifar10.npz"
    prepare(archive, arrays, arrays.with_suffix(".json"), md5, val_size=val_size,
            train_records=5 * n_per_batch, test_records=n_per_batch)
    return arrays


def copy_workflow(dest: Path, studies: dict[str, str] | None = None) -> Path:
    """The Snakefile, the environment files, workflow/, profiles/ and conf/ copied to dest, plus extra
    study files {name: yaml}."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "environment.yml", "environment.post-deploy.sh"):
        shutil.copy(REPO / name, dest / name)
    for folder in ("workflow", "profiles", "conf"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (studies or {}).items():
        (dest / "conf" / "study" / f"{name}.yaml").write_text(text)
    return dest


def tiny_run_config(tmp_path: Path, arrays: Path, name: str, *overrides: str):
    """The composed config of a small MLP run on the tiny data: its folder tmp_path/name, its store
    tmp_path/mlflow.db (one thread, batches of 32, no progress bar)."""
    from cnnlab.study.studies import compose_config

    return compose_config([
        "model=mlp", "model.hidden=[32]", "trainer.batch_size=32", "trainer.eval_batch_size=64",
        "trainer.progress_bar=false", "trainer.threads=1", f"data.arrays={arrays}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"run.dir={tmp_path / name}", *overrides,
    ])


def record_forward_passes(monkeypatch, observe) -> list[tuple[bool, object]]:
    """Patch nn.Linear.forward to append (the layer's training flag, observe()) at each of a run's
    passes: training, validation, the train probe and the test. MLflow's check of the logged model,
    which serves in fp32 on its own copy of the network after training, is left out."""
    import traceback

    import torch

    seen = []
    forward = torch.nn.Linear.forward

    def recorded(self, x):
        if not any("/mlflow/" in frame.filename for frame in traceback.extract_stack()):
            seen.append((self.training, observe()))
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", recorded)
    return seen


def train_cmd(*overrides: str) -> list[str]:
    return [PYTHON, "-m", "cnnlab.training.train", "trainer.progress_bar=false", *overrides]


def run(cmd: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
