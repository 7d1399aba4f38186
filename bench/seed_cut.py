"""What fewer seeds would conclude: a finished study's claims recomputed on a subset of its seeds.

    python -m bench.seed_cut --workdir DIR --study cpu --seeds 0,1,2 --limited-seeds 0,1,2,3

The runs of a cut plan that keeps the same variants, budgets and grids but fewer seeds are exactly
the finished study's runs of those seeds (a run depends on its own seed only), so the cut's claims
are the study's claims over the subset. The study file is copied to a scratch conf/ with the seeds
replaced and the report is built from the same MLflow store into DIR/results/<study>/report-cut-*;
then every claim's verdict is printed beside the full study's (results/<study>/report/claims.csv).
The last line counts the verdicts that moved; a cut that loses a verdict the study decided is not
one to take. A fresh run of the cut plan must then give the same numbers (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from cnnlab.report import build_report
from cnnlab.report.claims import INCONCLUSIVE
from cnnlab.study.studies import CONF_DIR


def cut_conf(study: str, seeds: list[int], limited_seeds: list[int] | None, into: Path) -> Path:
    """A copy of conf/ whose study file lists only the given seeds (the limited regime's its own)."""
    conf = into / "conf"
    shutil.copytree(CONF_DIR, conf)
    path = conf / "study" / f"{study}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["seeds"] = seeds
    if limited_seeds is not None:
        raw.setdefault("regimes", {}).setdefault("limited", {})["seeds"] = limited_seeds
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return conf


def compare(full: pd.DataFrame, cut: pd.DataFrame) -> pd.DataFrame:
    keys = ["claim", "model"]
    both = full[[*keys, "n_seeds", "effect_mean", "verdict"]].merge(
        cut[[*keys, "n_seeds", "effect_mean", "verdict"]], on=keys, suffixes=("_full", "_cut"))
    both["moved"] = both.verdict_full != both.verdict_cut
    both["lost"] = both.moved & (both.verdict_full != INCONCLUSIVE) & (both.verdict_cut == INCONCLUSIVE)
    return both


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="the folder the full study ran in")
    p.add_argument("--study", default="cpu")
    p.add_argument("--seeds", required=True, help="the full-data regime's seeds to keep, e.g. 0,1,2")
    p.add_argument("--limited-seeds", help="the limited regime's seeds to keep (default: as the study file)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    limited = [int(s) for s in args.limited_seeds.split(",")] if args.limited_seeds else None
    results = args.workdir / "results"
    full_claims = results / args.study / "report" / "claims.csv"
    if not full_claims.is_file():
        sys.exit(f"seed_cut: {full_claims} is missing; run the {args.study} study in {args.workdir} to its report")
    label = f"report-cut-{args.seeds.replace(',', '')}" + (f"-{args.limited_seeds.replace(',', '')}" if limited else "")
    out = results / args.study / label
    with tempfile.TemporaryDirectory() as scratch:
        conf = cut_conf(args.study, seeds, limited, Path(scratch))
        build_report(f"sqlite:///{results / 'mlflow.db'}", args.study, conf, results / "data" / "cifar10.npz", out)
    table = compare(pd.read_csv(full_claims), pd.read_csv(out / "claims.csv"))
    print("| claim | compared | full: seeds, effect, verdict | cut: seeds, effect, verdict |")
    print("|---|---|---|---|")
    for r in table.itertuples():
        mark = " (MOVED)" if r.moved else ""
        print(f"| {r.claim} | {r.model} | {r.n_seeds_full}, {r.effect_mean_full:+.1f}, {r.verdict_full} | "
              f"{r.n_seeds_cut}, {r.effect_mean_cut:+.1f}, {r.verdict_cut}{mark} |")
    print(f"verdicts moved: {int(table.moved.sum())} of {len(table)}; decided verdicts lost: {int(table.lost.sum())}")
    return 0 if not table.lost.any() else 1


if __name__ == "__main__":
    sys.exit(main())
