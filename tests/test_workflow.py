"""The real `snakemake` command, end to end, on a tiny archive served from 127.0.0.1."""

import csv
import functools
import http.server
import re
import threading

import pytest
from mlflow import MlflowClient

from tests.helpers import SNAKEMAKE, copy_workflow, read_json, run
from tests.tiny_cifar import write_tiny_archive

TINY = ["train_records=500", "test_records=100", "val_size=100"]


@pytest.fixture
def served_archive(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    md5 = write_tiny_archive(folder / "cifar-10-binary.tar.gz", 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-binary.tar.gz", md5
    server.shutdown()


def snakemake(workdir, *args, timeout=900):
    return run([SNAKEMAKE, "--cores", "2", "-s", str(workdir / "Snakefile"), "--directory", str(workdir), *args],
               cwd=workdir, timeout=timeout)


def test_smoke_study_from_download_to_report_then_nothing_to_do(tmp_path, served_archive):
    url, md5 = served_archive
    wd = copy_workflow(tmp_path / "wd")
    config = ["--config", "study=smoke", f"data_url={url}", f"data_md5={md5}", *TINY]
    proc = snakemake(wd, *config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = wd / "results" / "smoke" / "report"
    assert (report / "report.html").stat().st_size > 10_000
    rows = {r["variant"]: r for r in csv.DictReader(open(report / "summary.csv"))}
    assert set(rows) == {"mlp_baseline", "cnn_baseline"}
    assert rows["mlp_baseline"]["model"] == "mlp" and rows["cnn_baseline"]["model"] == "cnn"
    client = MlflowClient(f"sqlite:///{wd / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'")
    assert sorted(r.data.tags["variant"] for r in runs) == ["cnn_baseline", "mlp_baseline"]
    for r in runs:
        assert r.info.status == "FINISHED"
        result = read_json(wd / "results" / "smoke" / "runs" / r.data.tags["variant"] / "seed0" / "result.json")
        assert r.data.metrics["test/acc"] == pytest.approx(result["test_acc"])
        assert float(rows[r.data.tags["variant"]]["test_acc_mean"]) == pytest.approx(result["test_acc"])
        assert int(rows[r.data.tags["variant"]]["params"]) == result["params"]
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")] == [0, 1]
    kinds = {r.data.tags.get("cnnlab.kind") for r in client.search_runs([exp.experiment_id])}
    assert {"prepare", "train", "report"} <= kinds
    # Every training job was forked by the warm process (cnnlab.launch.forkserver), the first one included.
    # The workflow started it as it began (onstart), so both came from the same one.
    logs = sorted((wd / "logs" / "smoke" / "train").glob("*.log"))
    forked = [re.search(r"forked from the warm process (\d+)", log.read_text()) for log in logs]
    assert len(logs) == 2 and all(forked) and len({m.group(1) for m in forked}) == 1
    assert "cnnlab: 2 training jobs to run (smoke)" in proc.stdout + proc.stderr

    again = snakemake(wd, *config, "--dry-run")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # An edit to one variant's overrides re-runs that variant's training and the report only.
    study = wd / "conf" / "study" / "smoke.yaml"
    study.write_text(study.read_text().replace("overrides: [model=mlp, optimizer=adam]",
                                               "overrides: [model=mlp, optimizer=adam, optimizer.lr=0.002]"))
    edited = snakemake(wd, *config, "--dry-run")
    out = edited.stdout + edited.stderr
    assert edited.returncode == 0 and "mlp_baseline" in out and "params" in out.lower()
    assert "variant=cnn_baseline" not in out
    # Run, the estimate before it counts that job, whose result.json exists: Snakemake's own list.
    rerun = snakemake(wd, *config)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "cnnlab: 1 training job to run (smoke)" in rerun.stdout + rerun.stderr


def test_a_bad_variant_stops_the_workflow_before_any_job_with_one_clear_line(tmp_path):
    wd = copy_workflow(tmp_path / "wd", {"bad": "seeds: [0]\nvariants:\n  a:\n    overrides: [model=resnet]\n"})
    proc = snakemake(wd, "--dry-run", "--config", "study=bad")
    assert proc.returncode != 0
    assert (
        "Could not find 'model/resnet'; valid choices: cnn, fastcnn, mlp. (study file conf/study/bad.yaml)"
        in proc.stdout + proc.stderr
    )
    assert not (wd / "results").exists()


def test_the_longest_training_jobs_are_scheduled_first(tmp_path):
    # Each training job's priority is its work (cnnlab.study.estimate.training_work): the CNN's
    # full-data runs first, the MLP's limited-regime runs last, so no long job is left to run alone.
    wd = copy_workflow(tmp_path / "wd")
    proc = snakemake(wd, "-n", "--config", "study=quick", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = re.findall(r"rule train_variant:.*?wildcards: study=quick, variant=(\w+), seed=\d+\n\s+priority: (\d+)",
                      proc.stdout + proc.stderr, flags=re.S)
    priority = {variant: int(p) for variant, p in jobs}
    assert len(priority) == 21
    assert min(priority[v] for v in ("cnn_baseline", "cnn_all", "cnn_gap")) > priority["mlp_baseline"]
    assert priority["mlp_baseline"] > max(priority[v] for v in ("mlp_limited_baseline", "mlp_l1", "mlp_augment"))


def most_training_jobs_at_once(log: str) -> int:
    """The most train_variant jobs running together, from Snakemake's log of starts and ends."""
    running, most, rule = set(), 0, None
    for line in log.splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule == "train_variant":
            running.add(m.group(1))
            most = max(most, len(running))
        elif m := re.match(r"Finished jobid: (\d+)", line):
            running.discard(m.group(1))
    return most


@pytest.mark.slow
def test_the_jobs_memory_is_counted_against_what_the_machine_has_free(tmp_path, served_archive):
    # Each training job declares the memory it holds (mem_mb); locally the workflow registers what the
    # machine has free as the limit, so --cores never starts more jobs than fit. CNNLAB_AVAILABLE_MB
    # stands in for a machine with room for one job: the smoke study's two jobs then run one by one.
    url, md5 = served_archive
    wd = copy_workflow(tmp_path / "wd")
    config = ["--config", "study=smoke", f"data_url={url}", f"data_md5={md5}", *TINY]
    proc = run([SNAKEMAKE, "--cores", "2", "-s", str(wd / "Snakefile"), "--directory", str(wd), *config],
               cwd=wd, timeout=900, env={"CNNLAB_AVAILABLE_MB": "4000"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "train_variant" in proc.stderr and most_training_jobs_at_once(proc.stderr) == 1


def test_the_count_of_jobs_at_once_reads_snakemakes_log():
    log = "\n".join(["localrule train_variant:", "    jobid: 7", "localrule train_variant:", "    jobid: 8",
                     "Finished jobid: 7 (Rule: train_variant)", "localrule build_report:", "    jobid: 9",
                     "Finished jobid: 8 (Rule: train_variant)"])
    assert most_training_jobs_at_once(log) == 2
