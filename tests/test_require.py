"""A test whose real facility is missing fails under CI and skips, saying why, everywhere else."""

import subprocess
import sys

from tests.helpers import REPO

CASE = """
from tests.helpers import require

def test_needs_a_facility():
    require(False, "no tmpfs can be mounted here")

def test_has_its_facility():
    require(True, "unused")
"""


def _pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    case = tmp_path / "test_case.py"
    case.write_text(CASE)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", str(case), "-q", "-rs", "-p", "no:cacheprovider", "-o", "addopts="]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)


def test_outside_ci_a_missing_facility_skips_with_its_reason(tmp_path):
    proc = _pytest(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout
    assert "SKIPPED [1] test_case.py:5: no tmpfs can be mounted here" in proc.stdout


def test_in_ci_a_missing_facility_fails_the_run(tmp_path):
    proc = _pytest(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed" in proc.stdout
    assert "CI must run this test's real case, but no tmpfs can be mounted here" in proc.stdout
