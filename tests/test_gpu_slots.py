"""GPU slots: k jobs per GPU at most, each pinned to one GPU, and a killed job frees its slot.

No GPU is needed: the GPUs are a stand-in CUDA_VISIBLE_DEVICES list; the processes and locks are real.
"""

import collections
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A training job's first step: take a slot, then report the GPU it is pinned to and hold it.
CHILD = """
import os, sys, time
from cnnlab.training.gpu import pin_to_free_gpu
lock = pin_to_free_gpu()
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[1]))
"""


def _start(gpus: str, per_gpu: int, lock_dir, hold_s: float) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "CNNLAB_JOBS_PER_GPU": str(per_gpu),
           "CNNLAB_GPU_LOCK_DIR": str(lock_dir)}
    env.pop("SLURM_JOB_GPUS", None)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(hold_s)], stdout=subprocess.PIPE, text=True, env=env)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _pinned(procs, expected: int, timeout_s: float = 300) -> dict:
    """{process: GPU} for the first `expected` processes to report their GPU, in any order."""
    pinned = {}
    with selectors.DefaultSelector() as sel:
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
        deadline = time.monotonic() + timeout_s
        while len(pinned) < expected and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                pinned[key.data] = key.data.stdout.readline().strip()
                sel.unregister(key.fileobj)
    return pinned


@pytest.mark.parametrize(("gpus", "per_gpu"), [("0,1,2", 1), ("0,1", 2), ("3,GPU-5f2a", 3)])
def test_k_jobs_per_gpu_never_more_and_every_slot_used(tmp_path, gpus, per_gpu):
    n_slots = len(gpus.split(",")) * per_gpu
    procs = [_start(gpus, per_gpu, tmp_path, 120) for _ in range(n_slots + 1)]
    try:
        # Every slot is taken; the one job more than the slots waits instead of crowding a GPU.
        pinned = _pinned(procs, n_slots)
        counts = collections.Counter(pinned.values())
        assert counts == {gpu: per_gpu for gpu in gpus.split(",")}, counts
        time.sleep(2)
        waiting = [p for p in procs if p not in pinned]
        assert len(waiting) == 1 and waiting[0].poll() is None
        assert _pinned(waiting, 1, timeout_s=2) == {}
    finally:
        _stop(procs)


def test_two_jobs_on_two_gpus_go_to_different_gpus(tmp_path):
    procs = [_start("0,1", 4, tmp_path, 60) for _ in range(2)]
    try:
        assert sorted(_pinned(procs, 2).values()) == ["0", "1"]
    finally:
        _stop(procs)


def test_a_sigkilled_job_frees_its_slot_for_a_waiting_one(tmp_path):
    holders = [_start("0,1", 2, tmp_path, 120) for _ in range(4)]
    try:
        pinned = _pinned(holders, 4)
        assert sorted(pinned.values()) == ["0", "0", "1", "1"]
        waiter = _start("0,1", 2, tmp_path, 0)
        holders.append(waiter)
        time.sleep(2)
        assert waiter.poll() is None  # every slot busy: it waits
        victim = next(p for p, gpu in pinned.items() if gpu == "1")
        os.kill(victim.pid, signal.SIGKILL)  # the kernel drops the dead process's lock
        assert waiter.stdout.readline().strip() == "1"
        waiter.wait(timeout=30)
    finally:
        _stop(holders)


def test_no_gpus_means_no_slot_and_no_pinning(tmp_path, monkeypatch):
    from cnnlab.training.gpu import acquire_gpu_slot, pin_to_free_gpu

    assert acquire_gpu_slot([], 2, tmp_path) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_to_free_gpu() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_slurm_chosen_gpu_is_left_alone(tmp_path, monkeypatch):
    from cnnlab.training.gpu import pin_to_free_gpu

    monkeypatch.setenv("SLURM_JOB_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert pin_to_free_gpu() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_jobs_per_gpu_is_one_clear_sentence(monkeypatch, value):
    from cnnlab.errors import UserError
    from cnnlab.training.gpu import jobs_per_gpu

    monkeypatch.setenv("CNNLAB_JOBS_PER_GPU", value)
    with pytest.raises(UserError, match="jobs_per_gpu"):
        jobs_per_gpu()


def test_the_workflow_hands_jobs_per_gpu_to_its_jobs_and_reads_the_gpu_list(monkeypatch):
    from cnnlab.training.gpu import jobs_per_gpu, listed_gpus, set_jobs_per_gpu

    monkeypatch.delenv("CNNLAB_JOBS_PER_GPU", raising=False)
    assert jobs_per_gpu() == 1  # a job started by hand has its GPU to itself
    set_jobs_per_gpu(3)
    assert jobs_per_gpu() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 2, GPU-5f2a ,")
    assert listed_gpus() == ["2", "GPU-5f2a"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert listed_gpus() is None


def test_gpus_are_counted_without_starting_cuda_so_that_the_pin_holds(tmp_path, monkeypatch):
    """CUDA_VISIBLE_DEVICES unset on a machine with four GPUs: the job is pinned to one of them
    before anything starts CUDA (once its driver starts, it ignores a later CUDA_VISIBLE_DEVICES)."""
    import pynvml
    import torch

    from cnnlab.training.gpu import pin_to_free_gpu

    started_with = []  # CUDA_VISIBLE_DEVICES as it was each time something would start CUDA

    def starts_cuda(*args, **kwargs):
        started_with.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
        return True

    monkeypatch.setattr(torch.cuda, "is_available", starts_cuda)
    monkeypatch.setattr(torch.cuda, "init", starts_cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: starts_cuda() and 4)
    # A stand-in NVIDIA driver with four GPUs: there is no GPU here.
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 4)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "CNNLAB_JOBS_PER_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CNNLAB_GPU_LOCK_DIR", str(tmp_path))
    locks = [pin_to_free_gpu()]
    pinned = [os.environ["CUDA_VISIBLE_DEVICES"]]
    try:
        for _ in range(3):  # the next jobs, each started with the variable unset
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
            locks.append(pin_to_free_gpu())
            pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
        assert started_with == []
        assert sorted(pinned) == ["0", "1", "2", "3"]
    finally:
        for lock in locks:
            if lock is not None:
                lock.release()


def test_the_driver_s_gpu_count_matches_nvidia_smi():
    """The real NVML: as many GPUs as `nvidia-smi -L` lists, and none (no error) without a driver."""
    import shutil

    from cnnlab.training.gpu import nvml_gpu_count

    listed = 0
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        listed = sum(line.startswith("GPU ") for line in out.splitlines())
    assert nvml_gpu_count() == listed


def _runnable_by_anyone(path: str) -> bool:
    """Whether any user may run the file at path: it and every folder above it open to others."""
    real = Path(path).resolve()
    return real.is_file() and all(os.stat(p).st_mode & 0o001 for p in [real, *real.parents])


@pytest.fixture(scope="module")
def shared_install():
    """(interpreter, PYTHONPATH) another user can run: the slot code and filelock copied to a folder
    open to all, and a Python whose path is too (this checkout or its interpreter may be private)."""
    import shutil
    import tempfile

    import filelock

    python = next((p for p in (sys.executable, "/usr/bin/python3") if _runnable_by_anyone(p)), None)
    if python is None:
        pytest.skip("no Python interpreter on this machine that another user may run")
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-shared-install-"))
    src = Path(__file__).resolve().parents[1] / "src" / "cnnlab"
    for rel in ("__init__.py", "errors.py", "training/__init__.py", "training/gpu.py"):
        (folder / "cnnlab" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, folder / "cnnlab" / rel)
    shutil.copytree(Path(filelock.__file__).parent, folder / "filelock")
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield python, str(folder)
    shutil.rmtree(folder)


def _start_as(uid: int, install: tuple[str, str], hold_s: float) -> subprocess.Popen:
    """A job of another user (root starts it with that uid), with the default lock folder."""
    python, path = install
    env = {k: v for k, v in os.environ.items() if k not in ("CNNLAB_GPU_LOCK_DIR", "XDG_RUNTIME_DIR", "SLURM_JOB_GPUS")}
    env.update(CUDA_VISIBLE_DEVICES="0", CNNLAB_JOBS_PER_GPU="1", HOME="/tmp", PYTHONPATH=path)
    return subprocess.Popen([python, "-c", CHILD, str(hold_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, user=uid, cwd="/tmp")


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a second user's job needs root")
def test_two_users_each_get_a_private_slot_folder_of_their_own(shared_install):
    # Two users on one machine, one GPU: each holds the GPU's one slot in a folder of their own (mode
    # 0700, owned by them) instead of the second failing on the first user's folder or waiting on its slot.
    uids = (54321, 54322)
    procs = [_start_as(uid, shared_install, 30) for uid in uids]
    try:
        pinned = _pinned(procs, 2, timeout_s=120)
        assert sorted(pinned.values()) == ["0", "0"], [p.stderr.read() for p in procs if p not in pinned]
    finally:
        _stop(procs)
    import tempfile

    for uid in uids:
        folder = os.path.join(tempfile.gettempdir(), f"cnnlab-gpu-slots-{uid}")
        info = os.stat(folder)
        assert info.st_uid == uid and info.st_mode & 0o777 == 0o700
        subprocess.run(["rm", "-rf", folder], check=True)


def test_a_slot_folder_someone_else_owns_is_refused_in_one_sentence(tmp_path):
    from cnnlab.errors import UserError
    from cnnlab.training.gpu import acquire_gpu_slot

    open_to_all = tmp_path / "slots"
    open_to_all.mkdir(mode=0o777)
    os.chmod(open_to_all, 0o777)  # anyone could plant locks or links in it
    with pytest.raises(UserError, match="is not a folder of this user's own that only they may write to"):
        acquire_gpu_slot(["0"], 1, folder=open_to_all, wait_s=0)
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 54321, 54321)  # pre-created by another user
        start = time.monotonic()
        with pytest.raises(UserError, match="owner uid 54321"):
            acquire_gpu_slot(["0"], 1, folder=theirs, wait_s=0)
        assert time.monotonic() - start < 5  # refused, not waited on
