#!/usr/bin/env python3
"""`snakemake --lint`, failing on any finding.

Run it in the folder that holds the Snakefile; its arguments go to snakemake. The findings are
read from snakemake's text output (one `    * <title>:` line each): Snakemake 9.27's command line
prints text even when asked for `--lint json`.
"""

import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    beside = Path(sys.executable).with_name("snakemake")  # this environment's, activated or not
    snakemake = str(beside) if beside.exists() else shutil.which("snakemake") or "snakemake"
    proc = subprocess.run([snakemake, "--lint", *sys.argv[1:]], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    titles = sorted({line[6:].rstrip(":") for line in output.splitlines() if line.startswith("    * ")})
    if titles or proc.returncode != 0:
        print(output, file=sys.stderr)
        what = "; ".join(titles) or f"snakemake --lint exited with {proc.returncode}"
        print(f"snakemake --lint: fix these findings: {what}", file=sys.stderr)
        return 1
    print("snakemake --lint: no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
