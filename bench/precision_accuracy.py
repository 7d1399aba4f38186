"""Does training in bf16 change what a study concludes? Two finished studies of the same variants, compared.

    snakemake --cores all --config study=cpu_fp32 ...   # in the folder where the cpu study ran
    python -m bench.precision_accuracy --workdir DIR [--reference cpu_fp32 --candidate cpu]

Reads each study's report tables (results/<study>/report/summary.csv, runs.csv, claims.csv) and prints,
per variant, both mean test accuracies, their difference and the reference's seeds (their range and
standard deviation); per claim, both verdicts. A variant is "within its seeds' spread" when the
candidate's mean lies inside the range of the reference's seed accuracies. The last lines count
the verdicts that changed and the variants outside that range, and name the largest difference;
the exit status is 1 when either count is not zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def tables(workdir: Path, study: str) -> dict[str, pd.DataFrame]:
    report = workdir / "results" / study / "report"
    missing = [n for n in ("summary.csv", "runs.csv", "claims.csv") if not (report / n).is_file()]
    if missing:
        sys.exit(f"precision_accuracy: {report} has no {', '.join(missing)}; run the {study} study in "
                 f"{workdir} to its report first (snakemake --cores all --config study={study}).")
    return {n: pd.read_csv(report / f"{n}.csv") for n in ("summary", "runs", "claims")}


def compare_variants(reference: dict, candidate: dict) -> pd.DataFrame:
    """One row per variant of both studies: the two means, their difference and the reference's seeds."""
    runs = reference["runs"][reference["runs"]["state"] == "ok"]
    seeds = runs.groupby("variant")["test_acc"].agg(["min", "max", "std", "count"])
    ref = reference["summary"].set_index("variant")["test_acc_mean"]
    cand = candidate["summary"].set_index("variant")["test_acc_mean"]
    rows = []
    for variant in ref.index.intersection(cand.index, sort=False):
        s = seeds.loc[variant]
        rows.append({
            "variant": variant,
            "reference": 100 * ref[variant],
            "candidate": 100 * cand[variant],
            "difference": 100 * (cand[variant] - ref[variant]),
            "seed_min": 100 * s["min"], "seed_max": 100 * s["max"], "seed_std": 100 * s["std"],
            "seeds": int(s["count"]),
            "within": bool(s["min"] <= cand[variant] <= s["max"]),
        })
    return pd.DataFrame(rows)


def compare_claims(reference: dict, candidate: dict) -> pd.DataFrame:
    keys = ["claim", "model"]
    ref = reference["claims"][[*keys, "effect_mean", "verdict"]]
    cand = candidate["claims"][[*keys, "effect_mean", "verdict"]]
    both = ref.merge(cand, on=keys, how="outer", suffixes=("_reference", "_candidate"))
    both["changed"] = both["verdict_reference"] != both["verdict_candidate"]
    return both


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, type=Path, help="the snakemake folder both studies ran in")
    p.add_argument("--reference", default="cpu_fp32", help="the study trained in fp32")
    p.add_argument("--candidate", default="cpu", help="the study whose precision is under test")
    args = p.parse_args(argv)
    reference, candidate = tables(args.workdir, args.reference), tables(args.workdir, args.candidate)
    variants, claims = compare_variants(reference, candidate), compare_claims(reference, candidate)
    if variants.empty:
        sys.exit(f"precision_accuracy: {args.reference} and {args.candidate} share no variant.")

    print(f"| variant | {args.reference} test acc. | {args.candidate} | difference (points) "
          f"| {args.reference} seeds: range, SD | within the range |")
    print("|---|---|---|---|---|---|")
    for r in variants.itertuples():
        print(f"| {r.variant} | {r.reference:.2f} | {r.candidate:.2f} | {r.difference:+.2f} "
              f"| {r.seed_min:.2f}-{r.seed_max:.2f} ({r.seeds}), {r.seed_std:.2f} | {'yes' if r.within else 'NO'} |")
    print()
    print(f"| claim | model | {args.reference} effect, verdict | {args.candidate} effect, verdict |")
    print("|---|---|---|---|")
    for r in claims.itertuples():
        print(f"| {r.claim} | {r.model} | {r.effect_mean_reference:+.1f}, {r.verdict_reference} "
              f"| {r.effect_mean_candidate:+.1f}, {r.verdict_candidate}{' (CHANGED)' if r.changed else ''} |")
    print()
    largest = variants.loc[variants["difference"].abs().idxmax()]
    outside = variants[~variants["within"]]
    print(f"largest difference: {largest['difference']:+.2f} points ({largest['variant']}; "
          f"its {args.reference} seeds' SD {largest['seed_std']:.2f})")
    print(f"variants outside the {args.reference} seeds' range: {len(outside)} of {len(variants)}"
          + (f" ({', '.join(outside['variant'])})" if len(outside) else ""))
    print(f"verdicts changed: {int(claims['changed'].sum())} of {len(claims)}")
    return int(bool(len(outside)) or bool(claims["changed"].any()))


if __name__ == "__main__":
    sys.exit(main())
