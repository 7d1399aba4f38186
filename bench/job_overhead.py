"""Where a study's job time goes: start-up, training, and the work after training.

    python -m bench.job_overhead --workdir DIR --study quick   # a finished study in DIR (snakemake's folder)
    python -m bench.job_overhead --run --workdir DIR          # run the quick study there first (timed)

Reads each training run's result.json (results/<study>/runs/<variant>/seed<k>/) and, when there,
its Snakemake benchmark file (benchmarks/<study>/train/<variant>-seed<k>.tsv). Per job, in seconds:

- start-up: process start to the first training step (imports, data, network, MLflow run,
  Lightning set-up; `startup_seconds`);
- training: the training epochs, validation excluded (`train_seconds`);
- after training: from the end of the last epoch's validation to result.json (test, figures,
  artifacts, closing the MLflow run; `after_training_seconds`);
- job: the Snakemake benchmark's wall time of the whole process, else `process_seconds`
  (process start to result.json).

Then the means, and the non-training share of job time: 1 - (sum of training) / (sum of job).
Targets (issue 15): start-up <= 3 s, after training <= 2 s, non-training share <= 15%.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import MIRROR, MIRROR_MD5, REPO


def run_study(workdir: Path, study: str, archive: str, md5: str, cores: str, extra: list[str]) -> float:
    """`snakemake --cores N` for the study in workdir, from the archive; returns its wall seconds."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--cores", cores, "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--config", f"study={study}", f"data_url=file://{Path(archive).resolve()}",
           f"data_md5={md5}", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def job_rows(workdir: Path, study: str) -> list[dict]:
    """One row per finished training run of the study: its variant, seed and seconds."""
    rows = []
    for result_file in sorted((workdir / "results" / study / "runs").glob("*/seed*/result.json")):
        r = json.loads(result_file.read_text())
        if r.get("status") != "FINISHED":
            continue
        bench = workdir / "benchmarks" / study / "train" / f"{r['variant']}-seed{r['seed']}.tsv"
        job = float(next(csv.DictReader(open(bench), delimiter="\t"))["s"]) if bench.is_file() else None
        nan = float("nan")
        rows.append({
            "run": f"{r['variant']} seed {r['seed']}",
            "job": job if job is not None else (r.get("process_seconds") or nan),
            "startup": r.get("startup_seconds") or nan,
            "training": r.get("train_seconds", nan),
            "after": r.get("after_training_seconds", nan),
        })
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean start-up, mean after-training time, and the non-training share of the jobs' time."""
    def mean(key):
        values = [r[key] for r in rows if not math.isnan(r[key])]
        return statistics.mean(values) if values else float("nan")

    timed = [r for r in rows if not math.isnan(r["job"]) and not math.isnan(r["training"])]
    job_total = sum(r["job"] for r in timed)
    share = 1 - sum(r["training"] for r in timed) / job_total if job_total else float("nan")
    return {"jobs": len(rows), "startup_mean": mean("startup"), "after_training_mean": mean("after"),
            "training_mean": mean("training"), "job_mean": mean("job"), "non_training_share": share}


def report(rows: list[dict], wall: float | None = None) -> dict:
    print(f"{'run':<26} {'job s':>7} {'start-up s':>10} {'training s':>10} {'after s':>8}")
    for r in rows:
        print(f"{r['run']:<26} {r['job']:7.1f} {r['startup']:10.1f} {r['training']:10.1f} {r['after']:8.1f}")
    s = summary(rows)
    print(f"jobs: {s['jobs']}; mean job {s['job_mean']:.1f} s, training {s['training_mean']:.1f} s")
    print(f"start-up (process start to first step): mean {s['startup_mean']:.2f} s (target <= 3 s)")
    print(f"after training (test, figures, artifacts, closing the run): mean {s['after_training_mean']:.2f} s "
          "(target <= 2 s)")
    if wall is not None:
        print(f"study wall time: {wall:.0f} s")
    print(f"non_training_share_of_job_time: {100 * s['non_training_share']:.1f}% (target <= 15%)")
    return s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/cnnlab-overhead", help="the study's snakemake folder")
    p.add_argument("--study", default="quick")
    p.add_argument("--run", action="store_true", help="run the study in --workdir first (timed)")
    p.add_argument("--archive", default=str(MIRROR))
    p.add_argument("--md5", default=MIRROR_MD5)
    p.add_argument("--cores", default=str(os.cpu_count()))
    p.add_argument("--config", nargs="*", default=[], help="more snakemake --config entries for --run")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    wall = run_study(workdir, args.study, args.archive, args.md5, args.cores, args.config) if args.run else None
    rows = job_rows(workdir, args.study)
    if not rows:
        sys.exit(f"job_overhead: no finished training runs under {workdir}/results/{args.study}/runs; "
                 "run the study there first (or pass --run)")
    report(rows, wall)


if __name__ == "__main__":
    main()
