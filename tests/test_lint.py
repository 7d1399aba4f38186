"""The linters CI runs come out clean: ruff, snakefmt, and `snakemake --lint`."""

from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, copy_workflow, run

BIN = Path(PYTHON).parent
SNAKEMAKE_LINT = [PYTHON, str(REPO / ".ci" / "snakemake_lint.py")]


@pytest.mark.parametrize(
    "command",
    [[str(BIN / "ruff"), "check", "."], [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"]],
    ids=["ruff", "snakefmt"],
)
def test_python_and_snakemake_code_is_clean_and_formatted(command):
    proc = run(command, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.slow  # snakemake --lint; CI also lints before the tests
def test_snakemake_lint_has_no_finding(tmp_path):
    # Snakemake keeps its state in .snakemake/ of the folder it runs in: lint a copy.
    workdir = copy_workflow(tmp_path / "wf")
    proc = run(SNAKEMAKE_LINT, cwd=workdir, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "snakemake --lint: no findings" in proc.stdout


@pytest.mark.slow  # snakemake --lint; CI also lints before the tests
def test_snakemake_lint_fails_on_any_finding(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'DIR = "results"\n\n\nrule copy_summary:\n    input:\n        DIR + "/summary.csv",\n    output:\n'
        '        "copy.csv",\n    log:\n        "copy.log",\n    conda:\n        "env.yaml"\n'
        '    shell:\n        "cp {input} {output} 2> {log}"\n'
    )
    proc = run(SNAKEMAKE_LINT, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("snakemake --lint: fix these findings: ")
    assert 'Absolute path "/summary.csv" in line 6' in last
