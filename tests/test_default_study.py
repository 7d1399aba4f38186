"""The workflow's first command fits the machine: study=auto picks the cpu study without a GPU and
the lecture study with one or through the SLURM profile; yes/no settings take a user's spellings."""

import re

import pytest

from tests.helpers import REPO, SNAKEMAKE, copy_workflow, run


def dry_run(workdir, *args, gpus: str | None = None):
    """`snakemake -n` in workdir; gpus: CUDA_VISIBLE_DEVICES ('' = none), which count_local_gpus reads."""
    env = {"CUDA_VISIBLE_DEVICES": gpus if gpus is not None else ""}
    proc = run([SNAKEMAKE, "-n", "-s", str(workdir / "Snakefile"), "--directory", str(workdir), *args],
               cwd=workdir, env=env, timeout=300)
    return proc


def studies_planned(proc) -> set[str]:
    return set(re.findall(r"wildcards: study=([A-Za-z0-9_-]+)", proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wd"))


def test_without_a_gpu_the_default_is_the_cpu_study_and_it_says_why(workdir, monkeypatch):
    monkeypatch.delenv("CNNLAB_AUTO_STUDY", raising=False)
    proc = dry_run(workdir, "--cores", "1")
    assert proc.returncode == 0, proc.stderr
    assert "cnnlab: study=auto runs the cpu study: this machine has no GPU" in proc.stderr
    assert studies_planned(proc) == {"cpu", "cpu_tuning"}


@pytest.mark.slow  # a snakemake dry run each
def test_with_a_gpu_the_default_is_the_lecture_study(workdir, monkeypatch):
    monkeypatch.delenv("CNNLAB_AUTO_STUDY", raising=False)
    proc = dry_run(workdir, "--cores", "1", gpus="0")  # a stand-in GPU id: the plan only, nothing runs
    assert proc.returncode == 0, proc.stderr
    assert "cnnlab: study=auto runs the lecture study: this machine has 1 GPU" in proc.stderr
    assert studies_planned(proc) == {"lecture", "lecture_tuning"}


@pytest.mark.slow  # a snakemake dry run each
def test_the_slurm_profile_runs_the_lecture_study_from_a_submit_host_without_a_gpu(workdir, monkeypatch):
    monkeypatch.delenv("CNNLAB_AUTO_STUDY", raising=False)
    proc = dry_run(workdir, "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"))
    assert proc.returncode == 0, proc.stderr
    assert studies_planned(proc) == {"lecture", "lecture_tuning"}
    assert "study=auto" not in proc.stderr  # the profile names the study


@pytest.mark.slow  # a snakemake dry run each
def test_an_explicit_study_wins(workdir, monkeypatch):
    monkeypatch.delenv("CNNLAB_AUTO_STUDY", raising=False)
    proc = dry_run(workdir, "--cores", "1", "--config", "study=smoke")
    assert proc.returncode == 0, proc.stderr
    assert studies_planned(proc) == {"smoke"} and "study=auto" not in proc.stderr


@pytest.mark.slow  # a snakemake dry run each
@pytest.mark.parametrize("spelling, warm", [("false", False), ("False", False), ("0", False), ("no", False),
                                            ("true", True), ("True", True), ("1", True)])
def test_warm_start_takes_the_spellings_a_user_types(workdir, monkeypatch, spelling, warm):
    monkeypatch.delenv("CNNLAB_WARM_START", raising=False)
    proc = dry_run(workdir, "--cores", "1", "--config", "study=smoke", f"warm_start={spelling}")
    assert proc.returncode == 0, proc.stderr
    assert ("training jobs start cold (warm_start is off)" in proc.stderr) == (not warm)


@pytest.mark.slow  # a snakemake dry run each
def test_cnnlab_warm_start_0_in_the_environment_turns_warm_starts_off(workdir, monkeypatch):
    monkeypatch.setenv("CNNLAB_WARM_START", "0")
    proc = dry_run(workdir, "--cores", "1", "--config", "study=smoke")
    assert proc.returncode == 0, proc.stderr
    assert "training jobs start cold (warm_start is off)" in proc.stderr


@pytest.mark.slow  # a snakemake dry run each
def test_a_yes_no_setting_with_another_word_is_one_sentence(workdir):
    proc = dry_run(workdir, "--cores", "1", "--config", "study=smoke", "warm_start=maybe")
    assert proc.returncode != 0
    # Snakemake prints a WorkflowError on stdout.
    assert ("warm_start='maybe' is not true or false; write --config warm_start=true or warm_start=false."
            in proc.stdout + proc.stderr)
