"""Where a study's time goes: per-job start-up overhead, and training versus everything else.

    python -m bench.job_overhead --run                # run the quick study on the local mirror, then analyse
    python -m bench.job_overhead --workdir DIR        # analyse a finished run in DIR

Per training job: seconds from the process's start to its first training step (imports, data
load, model, Lightning set-up; logged as `startup_seconds`), seconds inside training epochs
(`epoch_seconds` summed), and the rest of the job (validation, test, figures, MLflow uploads).
For the whole study: wall time, and the share of it spent in training epochs (the epochs'
seconds summed over jobs, divided by the number of jobs Snakemake ran at once).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from bench.common import MIRROR, MIRROR_MD5, REPO


def run_study(workdir: Path, study: str, archive: str, md5: str, cores: str) -> float:
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--cores", cores, "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--config", f"study={study}", f"data_url=file://{Path(archive).resolve()}",
           f"data_md5={md5}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ})
    return time.perf_counter() - start


def analyse(workdir: Path, study: str, wall: float | None, cores: int) -> None:
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'", max_results=10000)
    rows = []
    for r in runs:
        epochs = sum(m.value for m in client.get_metric_history(r.info.run_id, "epoch_seconds"))
        bench = workdir / "benchmarks" / study / "train" / f"{r.data.tags['variant']}-seed{r.data.tags['seed']}.tsv"
        job_wall = float(next(csv.DictReader(open(bench), delimiter="\t"))["s"]) if bench.exists() else float("nan")
        startup = r.data.metrics.get("startup_seconds", float("nan"))
        rows.append((r.data.tags["variant"], job_wall, startup, epochs, job_wall - startup - epochs))
    rows.sort()
    print(f"{'variant':<18} {'job s':>7} {'start-up s':>10} {'training s':>10} {'rest s':>7}")
    for v, job, st, ep, rest in rows:
        print(f"{v:<18} {job:7.1f} {st:10.1f} {ep:10.1f} {rest:7.1f}")
    startups = [r[2] for r in rows]
    print(f"start-up overhead per job: mean {statistics.mean(startups):.1f} s, max {max(startups):.1f} s")
    rests = [r[4] for r in rows]
    print(f"after-training work per job (validation, test, figures, uploads): mean {statistics.mean(rests):.1f} s")
    if wall is not None:
        training_wall = sum(r[3] for r in rows) / cores
        print(f"study wall time {wall:.0f} s: training epochs ~{training_wall:.0f} s "
              f"({100 * training_wall / wall:.0f}%), everything else ~{wall - training_wall:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/cnnlab-overhead")
    p.add_argument("--study", default="quick")
    p.add_argument("--run", action="store_true", help="run the study first (timed)")
    p.add_argument("--archive", default=str(MIRROR))
    p.add_argument("--md5", default=MIRROR_MD5)
    p.add_argument("--cores", default=str(os.cpu_count()))
    args = p.parse_args()
    workdir = Path(args.workdir)
    wall = run_study(workdir, args.study, args.archive, args.md5, args.cores) if args.run else None
    analyse(workdir, args.study, wall, int(args.cores))
    if wall is not None:
        print(f"job_overhead_seconds_per_job_max: see start-up column; study_wall_seconds: {wall:.0f}")


if __name__ == "__main__":
    main()
