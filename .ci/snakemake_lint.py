#!/usr/bin/env python3
"""`snakemake --lint`, failing on every finding except those explained where they stand.

Run it in the folder that holds the Snakefile; its arguments go to snakemake. The findings are
read from snakemake's text output (one `    * <title>:` line each): Snakemake 9.27's command line
prints text even when asked for `--lint json`.
"""

import shutil
import subprocess
import sys
from pathlib import Path

# The findings left on purpose: title -> where the reason is written.
EXPLAINED = {
    "Specify a conda environment or container for each rule.": "workflow/rules/common.smk",
}


def main() -> int:
    beside = Path(sys.executable).with_name("snakemake")  # this environment's, activated or not
    snakemake = str(beside) if beside.exists() else shutil.which("snakemake") or "snakemake"
    proc = subprocess.run([snakemake, "--lint", *sys.argv[1:]], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    titles = [line[6:].rstrip(":") for line in output.splitlines() if line.startswith("    * ")]
    unexplained = sorted(set(titles) - set(EXPLAINED))
    if unexplained or (proc.returncode != 0 and not titles):
        print(output, file=sys.stderr)
        what = "; ".join(unexplained) or f"snakemake --lint exited with {proc.returncode}"
        print(f"snakemake --lint: fix these findings or explain them in .ci/snakemake_lint.py: {what}", file=sys.stderr)
        return 1
    for title, where in EXPLAINED.items():
        if title in titles:
            print(f"snakemake --lint: {titles.count(title)} x '{title}' (explained in {where})")
    print("snakemake --lint: no other findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
