"""Where a finished study's time went: core-seconds by phase, regime and family, and the workflow's
estimate against the measured wall time.

    python -m bench.study_cost --workdir DIR --study cpu                  # a finished study in DIR
    python -m bench.study_cost --run --workdir DIR --study cpu --cores 2  # run it there first, timed

Reads every job's Snakemake benchmark file (benchmarks/...: the job's wall seconds) for the study
and its tuning study, and the estimate the workflow printed at its start
(results/<study>/estimate.json). Phases: data (download, preparation, the tracking set-up), tuning
(the tuning study's runs and its choice), main (the study's runs), report. A training job counts
its wall seconds once per core it held (one). With --run the wall time is measured, snakemake's
start to its exit; else pass --wall-seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

from bench.common import MIRROR, MIRROR_MD5
from bench.job_overhead import run_study
from cnnlab.study.studies import load_study


def seconds(tsv: Path) -> float:
    return float(next(csv.DictReader(open(tsv), delimiter="\t"))["s"])


def cost_rows(workdir: Path, study_name: str) -> list[dict]:
    """One row per job: phase, regime, family, seconds."""
    study = load_study(study_name)
    studies = {study_name: ("main", study)}
    if study.tuning_study:
        studies[study.tuning_study] = ("tuning", load_study(study.tuning_study))
    rows = []
    bench = workdir / "benchmarks"
    for name, (phase, spec) in studies.items():
        for tsv in sorted((bench / name / "train").glob("*-seed*.tsv")):
            variant = tsv.stem.rsplit("-seed", 1)[0]
            if variant not in spec.variants:
                continue
            rows.append({"phase": phase, "regime": spec.variant(variant).regime, "family": spec.model_choice(variant),
                         "job": tsv.stem, "seconds": seconds(tsv)})
        steps = (("init_tracking", "data"), ("choose_tuned_values", "tuning"), ("build_report", "report"))
        for step, phase_of in steps:
            tsv = bench / name / f"{step}.tsv"
            if tsv.is_file():
                rows.append({"phase": phase_of, "regime": "", "family": "", "job": f"{name}/{step}",
                             "seconds": seconds(tsv)})
    for step in ("download_archive", "prepare_data"):
        if (bench / f"{step}.tsv").is_file():
            rows.append({"phase": "data", "regime": "", "family": "", "job": step,
                         "seconds": seconds(bench / f"{step}.tsv")})
    return rows


def table(rows: list[dict]) -> dict:
    """(phase, regime, family) -> [jobs, core-seconds]."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    for r in rows:
        key = (r["phase"], r["regime"] or "–", r["family"] or "–")
        out[key][0] += 1
        out[key][1] += r["seconds"]
    return dict(sorted(out.items()))


def report(workdir: Path, study: str, wall: float | None) -> dict:
    rows = cost_rows(workdir, study)
    if not rows:
        sys.exit(f"study_cost: no benchmark files under {workdir}/benchmarks; run the study there first (or --run)")
    cells = table(rows)
    total = sum(s for _, s in cells.values())
    print("| phase | regime | family | jobs | core-seconds | share |")
    print("|---|---|---|---|---|---|")
    for (phase, regime, family), (n, s) in cells.items():
        print(f"| {phase} | {regime} | {family} | {n} | {s:,.0f} | {100 * s / total:.1f}% |")
    print(f"| all | | | {sum(n for n, _ in cells.values())} | {total:,.0f} | 100% |")
    estimate_file = workdir / "results" / study / "estimate.json"
    estimate = json.loads(estimate_file.read_text()) if estimate_file.is_file() else None
    out = {"core_seconds": total, "wall_seconds": wall, "cells": {" / ".join(k): v for k, v in cells.items()}}
    if wall is not None:
        print(f"wall time: {wall:,.0f} s")
    if estimate is not None:
        out["estimated_seconds"] = estimate["estimated_seconds"]
        print(f"the workflow's estimate at its start: {estimate['estimated_seconds']:,.0f} s for {estimate['jobs']} "
              f"training jobs on {estimate['slots']} slots")
        if wall:
            ratio = estimate["estimated_seconds"] / wall
            out["estimate_over_wall"] = ratio
            print(f"estimate / measured wall time: {ratio:.3f} (target 0.90-1.10)")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="the study's snakemake folder")
    p.add_argument("--study", default="cpu")
    p.add_argument("--run", action="store_true", help="run the study in --workdir first (timed)")
    p.add_argument("--wall-seconds", type=float, help="the measured wall time of a study run earlier")
    p.add_argument("--archive", default=str(MIRROR))
    p.add_argument("--md5", default=MIRROR_MD5)
    p.add_argument("--cores", default="2")
    p.add_argument("--config", nargs="*", default=[], help="more snakemake --config entries for --run")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    wall = (run_study(workdir, args.study, args.archive, args.md5, args.cores, args.config) if args.run
            else args.wall_seconds)
    report(workdir, args.study, wall)


if __name__ == "__main__":
    main()
