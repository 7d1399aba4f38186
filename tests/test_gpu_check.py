"""The GPU check's protocol (bench/README.md) rehearsed on the CPU, as the GPU machine would run it.

A clean virtual environment holds only what the GPU machine has that cnnlab and the kit use
(bench/device_packages.txt, at its versions where pip has them); the kit that bench/gpu_kit.py
builds is installed into it as the protocol installs it, without an index (and without a network
where this machine lets the test take it away); a tiny archive is cut into parts, carried one call
at a time, rebuilt and checked; then `gpu_check.py --dry` runs every section from there.

The environment's Python is the one running the tests, not the device's 3.12: torch for the CPU
is on hand only as a 3.11 wheel, and PyPI's 3.12 torch is a 0.5 GB CUDA build with gigabytes of
CUDA libraries. So the kit is rehearsed for this Python and built once more for 3.12, and the
test requires both kits to hold the same packages at the same versions, and the 3.12 kit's calls
to fit the device's limit with the full archive.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.tiny_cifar import write_tiny_archive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # a fresh environment and two kits

MIRROR_BYTES = 173_802_735  # the shared mirror's archive (its README); CI has no copy
# What cnnlab imports that the device already has (pyproject's dependencies and their needs).
DEVICE_SIDE = ["torch", "pytorch-lightning", "torchmetrics", "numpy", "pandas", "pyarrow", "scipy", "matplotlib",
               "psutil", "pyyaml", "filelock", "tqdm", "nvidia-ml-py"]
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _run(cmd, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)


def _kit(kit: Path, *args) -> subprocess.CompletedProcess:
    return _run([sys.executable, REPO / "bench" / "gpu_kit.py", "--kit", kit, *args], cwd=REPO)


def _wheel_versions(info: dict) -> dict[str, str]:
    return dict(w["file"].split("-")[:2] for w in info["wheels"])


def _device_version(name: str) -> str | None:
    for line in (REPO / "bench" / "device_packages.txt").read_text().splitlines():
        if line.split("==")[0].lower() == name.lower() and "==" in line:
            return line.split("==")[1]
    return None


def _pip_has(python: Path, requirement: str) -> bool:
    return _run([python, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", requirement]).returncode == 0


def _offline_prefix() -> list[str]:
    """`unshare -n` (a network namespace with nothing in it) where this machine allows it."""
    if shutil.which("unshare") and _run(["unshare", "-n", "true"]).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.fixture(scope="module")
def rehearsal_kit(tmp_path_factory):
    """The kit for this Python, with a tiny archive cut into parts of 0.4 MiB (several calls' worth)."""
    root = tmp_path_factory.mktemp("rehearsal")
    kit = root / "kit"
    archive = root / "cifar-10-binary.tar.gz"
    md5 = write_tiny_archive(archive, 100)
    built = _kit(kit, "--python-version", THIS_PYTHON, "--archive", archive, "--md5", md5, "--part-mib", "0.4")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return {"root": root, "kit": kit, "md5": md5, "built": built.stdout,
            "kit.json": json.loads((kit / "wheels" / "kit.json").read_text())}


@pytest.fixture(scope="module")
def rehearsal(rehearsal_kit):
    root, kit = rehearsal_kit["root"], rehearsal_kit["kit"]
    # The device's python3 with only its own packages: those cnnlab uses and those the kit needs.
    venv = root / "venv"
    base = Path(sys.base_prefix) / "bin" / f"python{THIS_PYTHON}"
    assert _run([base, "-m", "venv", venv]).returncode == 0
    python = venv / "bin" / "python3"
    needs = json.loads((kit / "wheels" / "kit.json").read_text())["device_requirements"]
    requirements = []
    for name in sorted(set(DEVICE_SIDE) | set(needs)):
        version = _device_version(name)
        if name == "torch":
            requirements.append("torch==2.13.0")  # the CPU build; the device's 2.11.0 is a CUDA build
        elif version and _pip_has(python, f"{name}=={version}"):
            requirements.append(f"{name}=={version}")
        else:
            requirements.append(f"{name}{needs.get(name, '')}")
    installed = _run([python, "-m", "pip", "install", "--quiet", *requirements])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return {**rehearsal_kit, "python": python}


def _call(rehearsal, *args, work=None) -> subprocess.CompletedProcess:
    """One device call: the checkout's bench/gpu_check.py under the clean Python, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "CUDA_", "CNNLAB_"))}
    env["PATH"] = f"{rehearsal['python'].parent}{os.pathsep}{env['PATH']}"
    work = work or rehearsal["root"] / "work"
    return _run([*_offline_prefix(), rehearsal["python"], "bench/gpu_check.py", "--kit", rehearsal["kit"],
                 "--work", work, *args], cwd=REPO, env=env)


def test_the_protocol_runs_offline_from_the_kit_and_the_rebuilt_parts(rehearsal):
    root, kit = rehearsal["root"], rehearsal["kit"]
    # The kit builder's own account: each call within the limit, the tiny archive in several parts.
    calls = re.findall(r"gpu_kit: transfer (\d+): ([\d.]+) MiB", rehearsal["built"])
    parts = sorted((kit / "data").iterdir())
    assert len(parts) >= 3 and len(calls) == len(parts), rehearsal["built"]
    assert all(float(size) <= 60 for _, size in calls)
    assert _run([rehearsal["python"], "-c", "import snakemake"]).returncode != 0  # only the kit brings it

    # Each transfer carries one part (the first the wheels too); the machine keeps what earlier steps left.
    held = root / "held"
    held.mkdir()
    for part in parts:
        shutil.move(part, held / part.name)
    for k, part in enumerate(parts, 1):
        shutil.move(held / part.name, kit / "data" / part.name)
        last = k == len(parts)
        args = ["--dry", "--box-factor", "5", "--out", root / "out"] if last else ["--stash-only"]
        proc = _call(rehearsal, *args)
        if not last:
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            assert f"data parts here: {list(range(1, k + 1))} of {len(parts)}; kit installed: True" in proc.stdout
        if k == 1:
            shutil.rmtree(kit / "wheels")  # later calls carry no wheels: the install must have stayed
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]

    results = (root / "out" / "gpu_check_dry_results.txt").read_text()
    assert "kit: installed by an earlier step" in results
    assert f"rebuilt from {len(parts)} parts, MD5 {rehearsal['md5']} checked" in results
    assert "device: cpu (no GPU)" in results
    assert re.search(r"versions: python [\d.]+, torch 2\.13\.0\+cpu, CUDA None, .* snakemake 9\.", results)
    for section in ("prepare", "speedrun", "packing", "study"):
        assert re.search(rf"^section {section}: ok, \d+ s$", results, re.M), results
    for k in (1, 2):
        assert re.search(rf"packing: {k} jobs per GPU: 2 jobs in [\d.]+ s = \d+ jobs/hour", results), results
    chosen = int(re.search(r"most jobs per hour at (\d) jobs per GPU", results).group(1))
    assert re.search(rf"{chosen} jobs per GPU: wall time \d+ s", results)
    runs = root / "work" / "workflow" / "results" / "gpu_check" / "runs"
    for variant in ("mlp_baseline", "cnn_baseline"):
        result = json.loads((runs / variant / "seed0" / "result.json").read_text())
        assert f"study: {variant:<20} test accuracy {result['test_acc']:.4f}" in results
        log = (root / "work" / "workflow" / "logs" / "gpu_check" / "train" / f"{variant}-seed0.log").read_text()
        assert "pinned to GPU 0" in log
    assert "non_training_share_of_job_time" in results
    assert re.search(r"speedrun: seed 0: test accuracy [\d.]+, training [\d.]+ s", results)
    assert "speedrun: mean test accuracy" in results
    assert "gpu_check: 4 of 4 sections ok" in results
    with tarfile.open(root / "out" / "gpu_check_dry_logs.tar.gz") as tar:
        names = tar.getnames()
    assert {"logs/prepare.log", "logs/speedrun.log", "logs/study.log"} <= set(names)
    assert "workflow/logs/gpu_check/train/cnn_baseline-seed0.log" in names

    # The kit beside the device's packages: nothing missing but what was left out on purpose, no
    # version conflict (pip check reads the install folder through PYTHONPATH).
    left_out = set(rehearsal["kit.json"]["left_out"])
    check = _run([rehearsal["python"], "-m", "pip", "check"], env={**os.environ,
                                                                   "PYTHONPATH": str(root / "work" / "site")})
    problems = [line for line in check.stdout.splitlines() if line.strip()]
    unexpected = [line for line in problems
                  if not re.search(r"requires ([\w.-]+), which is not installed", line)
                  or re.search(r"requires ([\w.-]+),", line).group(1).lower().replace("_", "-") not in left_out]
    assert unexpected == [], check.stdout

    # A call that finds a fresh machine, a damaged part, a missing part: one sentence each.
    cold = _call(rehearsal, "--stash-only", work=root / "cold")
    assert cold.returncode == 2 and "(a fresh machine, or the work folder was cleared)" in cold.stderr
    assert "Traceback" not in cold.stderr
    damaged = root / "damaged"
    shutil.copytree(root / "work" / "parts", damaged / "parts")
    (damaged / "site").symlink_to(root / "work" / "site")
    last = damaged / "parts" / parts[-1].name
    last.write_bytes(last.read_bytes()[:-1] + bytes([last.read_bytes()[-1] ^ 1]))
    proc = _call(rehearsal, "--out", root / "out-damaged", work=damaged)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "has MD5" in proc.stderr and f"not {rehearsal['md5']}" in proc.stderr
    (damaged / "parts" / parts[1].name).unlink()
    proc = _call(rehearsal, "--out", root / "out-missing", work=damaged)
    assert proc.returncode == 2 and f"data part 2 of {len(parts)} is not here" in proc.stderr, proc.stderr[-3000:]


def test_the_device_s_kit_is_the_rehearsed_kit_and_its_calls_fit(rehearsal_kit, tmp_path):
    device_kit = tmp_path / "kit"
    plan = _kit(device_kit, "--plan-bytes", MIRROR_BYTES)  # Python 3.12, manylinux x86_64
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    device_info = json.loads((device_kit / "wheels" / "kit.json").read_text())
    assert _wheel_versions(device_info) == _wheel_versions(rehearsal_kit["kit.json"])
    calls = [float(size) for size in re.findall(r"gpu_kit: transfer \d+: ([\d.]+) MiB", plan.stdout)]
    assert len(calls) == 4 and max(calls) <= 60, plan.stdout
    # The transfers bench/README.md gives are the ones the kit builder prints.
    readme = (REPO / "bench" / "README.md").read_text()
    steps = re.findall(r"^    ((?:copy|then): .*)$", plan.stdout, re.M)
    assert len(steps) == 8
    for step in steps:
        assert step.replace(os.path.relpath(device_kit, REPO), ".gpukit") in readme, step
    too_small = _kit(device_kit, "--reuse-wheels", "--plan-bytes", MIRROR_BYTES, "--limit-mib", "20")
    assert too_small.returncode == 1
    assert "transfer 1 would hold more than 20 MiB" in too_small.stderr and "Traceback" not in too_small.stderr
