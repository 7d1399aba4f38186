"""bench/gpu_check.sh --dry: every step of the GPU check on the CPU, tiny sizes, one results file."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_gpu_check_dry_writes_every_figure(tmp_path):
    work = tmp_path / "check"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry", "--work", str(work)],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = (work / "gpu_check_results.txt").read_text()
    assert "gpu_check: device: cpu (no GPU)" in results
    for k in (1, 2):
        assert re.search(rf"packing: {k} jobs per GPU: 2 jobs in [\d.]+ s = \d+ jobs/hour", results), results
    chosen = int(re.search(r"most jobs per hour at (\d) jobs per GPU", results).group(1))
    assert f"{chosen} jobs per GPU: wall time" in results
    # The workflow's `gpu` limit: one stand-in GPU times the chosen jobs per GPU.
    study_log = (work / "study.log").read_text()
    assert re.search(rf"Provided resources: gpu=\D*{chosen}\b", study_log), study_log[:2000]
    # Each accuracy in the file is the run's own, and each job ran pinned to the stand-in GPU 0.
    runs = work / "workflow" / "results" / "gpu_check" / "runs"
    for variant in ("mlp_baseline", "cnn_baseline"):
        result = json.loads((runs / variant / "seed0" / "result.json").read_text())
        assert f"study: {variant:<20} test accuracy {result['test_acc']:.4f}" in results
        log = (work / "workflow" / "logs" / "gpu_check" / "train" / f"{variant}-seed0.log").read_text()
        assert "pinned to GPU 0" in log
    assert "non_training_share_of_job_time" in results
    assert re.search(r"speedrun: seed 0: test accuracy [\d.]+, training [\d.]+ s", results)
    assert "speedrun: mean test accuracy" in results
