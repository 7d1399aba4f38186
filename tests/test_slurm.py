"""The smoke study runs end to end on a real SLURM cluster through the workflow profile.

Needs a running cluster with a `gpu` GRES (.ci/slurm/start.sh sets up a
single-node one). Every job goes through sbatch; the check is made on SLURM's
own records (squeue keeps finished jobs for MinJobAge), not on Snakemake's word.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require
from tests.tiny_cifar import write_tiny_archive

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
N_PER_BATCH = 40  # 5 training batches -> 200 training records
RULES = {"download_archive", "prepare_data", "init_tracking", "train_variant", "build_report"}

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1800)]


def _slurm_unavailable() -> str | None:
    """Why SLURM cannot run jobs here, or None when a node is up."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no sinfo); apt-get install slurm-wlm munge, then .ci/slurm/start.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if out.returncode != 0:
        return f"no SLURM controller answers (start one with .ci/slurm/start.sh): {out.stderr.strip()[:300]}"
    states = {s.rstrip("*~#$@+") for s in out.stdout.split()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"no SLURM node is up (node states: {sorted(states) or 'none'})"
    return None


def _slurm_jobs(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, comment)} from squeue; the plugin puts `rule_<name>...` in the comment."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%k"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    rows = (line.split("|", 2) for line in out.stdout.splitlines() if line.strip())
    return {job_id: (state, comment) for job_id, state, comment in rows}


def _rule_log_tails(work: Path, lines: int = 25) -> str:
    """The end of every rule log, to see why a job failed without digging in tmp."""
    parts = []
    for path in sorted((work / "logs").rglob("*.log")):
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        parts.append(f"\n--- {path.relative_to(work)}\n{tail}")
    return "".join(parts)


def test_smoke_study_runs_on_slurm(tmp_path):
    reason = _slurm_unavailable()
    require(reason is None, reason or "")

    archive = tmp_path / "cifar-10-tiny.tar.gz"
    md5 = write_tiny_archive(archive, n_per_batch=N_PER_BATCH)
    work = tmp_path / "work"  # on the same machine, so visible to the SLURM jobs
    work.mkdir()
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(work),
        "--workflow-profile", str(PROFILE),
        "--cores", "2",
        # Tiny jobs finish in seconds: ask SLURM early instead of after 40 s.
        "--slurm-init-seconds-before-status-checks", "5",
        "--config", "study=smoke", f"data_url=file://{archive}", f"data_md5={md5}",
        f"train_records={5 * N_PER_BATCH}", f"test_records={N_PER_BATCH}", "val_size=40",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    log = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(log)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{log[-4000:]}{_rule_log_tails(work)}"

    assert (work / "results/smoke/report/report.html").is_file()

    # Every job went through sbatch, and SLURM itself saw each one complete.
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert job_ids, f"no SLURM submission in the log:\n{log[-3000:]}"
    jobs = _slurm_jobs(job_ids)
    assert set(jobs) == set(job_ids), f"squeue lost jobs {set(job_ids) - set(jobs)} (MinJobAge too low?)"
    assert {state for state, _ in jobs.values()} == {"COMPLETED"}, jobs
    rules_run = {re.match(r"rule_([a-z_]+?)(_wildcards_|$)", comment).group(1) for _, comment in jobs.values()}
    assert rules_run == RULES
    train_ids = [job_id for job_id, (_, comment) in jobs.items() if comment.startswith("rule_train_variant")]
    assert len(train_ids) == 2  # mlp_baseline and cnn_baseline, one seed
    for job_id in train_ids:  # each training job was granted one (fake) GPU
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True)
        assert "gpu:1" in show.stdout, show.stdout

    # The training jobs logged their runs into the study's experiment.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'results/mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    # (The study also records its data preparation and report as runs of other kinds.)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnlab.kind` = 'train'")
    assert sorted(r.data.tags["variant"] for r in runs) == ["cnn_baseline", "mlp_baseline"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("val/acc" in r.data.metrics for r in runs)


def test_secrets_in_a_url_are_refused_under_slurm_before_anything_is_submitted(tmp_path):
    # Snakemake hands a cluster job the --config of the command line as typed: a URL with a password
    # or a token would be in every job's command line (ps, scontrol show job). It is refused at once.
    reason = _slurm_unavailable()
    require(reason is None, reason or "")
    work = tmp_path / "work"
    work.mkdir()
    secret = "Sl0rm-s3cret"
    for key, value in (("tracking_uri", f"http://alice:{secret}@127.0.0.1:9"),
                       ("data_url", f"https://data.example/cifar-10-binary.tar.gz?X-Amz-Signature={secret}")):
        cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--workflow-profile", str(PROFILE), "--cores", "2",
               "--config", "study=smoke", f"{key}={value}"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"{key} carries credentials or a token" in out, out[-3000:]
        assert secret not in out and "submitted with SLURM jobid" not in out
    for path in work.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    queued = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, timeout=30).stdout
    assert secret not in queued
