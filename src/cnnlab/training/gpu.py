"""GPU slots on one machine: up to `jobs_per_gpu` training jobs per GPU, each pinned to one GPU.

Snakemake's `gpu` resource only counts jobs; it never says which GPU a job gets. Each GPU has
`jobs_per_gpu` slots, one lock file each; a training process takes the first free slot, on the
least busy GPU, and sets CUDA_VISIBLE_DEVICES to that GPU before CUDA starts. The lock is an
fcntl lock, so the kernel releases it when the process ends, even by SIGKILL.

The GPUs to share out are the ones CUDA_VISIBLE_DEVICES lists when it is set (ids or UUIDs, as
CUDA reads them), else every GPU the NVIDIA driver reports. The workflow says how many jobs share one GPU
(`jobs_per_gpu` in workflow/config.yaml, handed to its jobs as CNNLAB_JOBS_PER_GPU); a job started
by hand has the GPU to itself unless that variable says otherwise. Under SLURM (SLURM_JOB_GPUS)
the scheduler has already given the job its GPU, and nothing is locked.

The lock files live in a folder of the user's own, private to them (mode 0700): $XDG_RUNTIME_DIR/
cnnlab-gpu-slots where the login session has one, else cnnlab-gpu-slots-<uid> in the temporary
folder. Two users of one machine never share it, and a folder someone else made there first is
refused with one sentence instead of being used (a user who could hold its slots could hold every
GPU). One probe at a time chooses a slot (a lock of its own), so two jobs starting together never
both see the same GPU as the least busy.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from cnnlab.errors import UserError

log = logging.getLogger(__name__)


def lock_dir() -> Path:
    """Read when a job asks, not at import: a job forked by the warm process has its own environment."""
    if os.environ.get("CNNLAB_GPU_LOCK_DIR"):
        return Path(os.environ["CNNLAB_GPU_LOCK_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "cnnlab-gpu-slots"
    return Path(tempfile.gettempdir()) / f"cnnlab-gpu-slots-{os.getuid()}"


def private_folder(folder: Path) -> Path:
    """The folder, made with mode 0700 if it is not there; refused unless this user owns it and no one else
    may write to it (a folder another user made could be filled with locks they hold, or links)."""
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise UserError(
            f"The GPU slot folder {folder} is not a folder of this user's own that only they may write to (owner "
            f"uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); remove it, or set CNNLAB_GPU_LOCK_DIR to a "
            "private folder of yours."
        )
    return folder


JOBS_PER_GPU_VARIABLE = "CNNLAB_JOBS_PER_GPU"


def jobs_per_gpu() -> int:
    """How many training jobs may share one GPU: CNNLAB_JOBS_PER_GPU, 1 when unset."""
    text = os.environ.get(JOBS_PER_GPU_VARIABLE, "1").strip()
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{JOBS_PER_GPU_VARIABLE}={text!r} is not a whole number of at least 1; "
                        "set jobs_per_gpu in workflow/config.yaml (or the variable) to 1, 2, 4, ...")
    return int(text)


def set_jobs_per_gpu(n: int) -> None:
    """Tell the training jobs this process starts (they inherit its environment) how many share a GPU."""
    os.environ[JOBS_PER_GPU_VARIABLE] = str(n)


def listed_gpus() -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES lists (ids or UUIDs); None when it is not set."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return None
    return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them, without starting CUDA.

    When it is unset they are counted through NVML: torch.cuda.is_available() starts CUDA's driver,
    which then ignores the CUDA_VISIBLE_DEVICES a job sets to pin itself (every job lands on GPU 0).
    """
    listed = listed_gpus()
    if listed is not None:
        return listed
    return [str(i) for i in range(nvml_gpu_count())]


def nvml_gpu_count() -> int:
    """How many GPUs the NVIDIA driver reports; 0 where there is no driver."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def _lock_name(gpu: str, slot: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
    return f"gpu-{safe}-slot{slot}.lock"


def acquire_gpu_slot(gpus: list[str], per_gpu: int = 1, folder: Path | None = None,
                     wait_s: float = 3600) -> tuple[str, FileLock] | None:
    """Lock a free slot on the least busy of `gpus` and return (gpu, lock); None when there are no GPUs.

    Keep the returned lock referenced for the life of the process. When every slot is taken
    (more jobs than slots, e.g. no --resources limit) it waits up to wait_s for one to free up.
    """
    if not gpus:
        return None
    folder = private_folder(lock_dir() if folder is None else folder)
    probing = FileLock(folder / "probe.lock")
    waited = 0.0
    while True:
        # Probe every slot: the free ones are taken for a moment, so that the job can go to the
        # GPU with the fewest jobs on it (spreads 2 jobs over 2 GPUs instead of stacking them).
        # One probe at a time: two interleaved probes could each find half of every GPU's slots
        # free and both choose the first GPU.
        with probing:
            free: dict[str, list[FileLock]] = {gpu: [] for gpu in gpus}
            for gpu in gpus:
                for slot in range(per_gpu):
                    lock = FileLock(folder / _lock_name(gpu, slot))
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue
                    free[gpu].append(lock)
            best = max(gpus, key=lambda gpu: len(free[gpu]))  # first of the least busy GPUs
            kept = free[best][0] if free[best] else None
            for locks in free.values():
                for lock in locks:
                    if lock is not kept:
                        lock.release()
        if kept is not None:
            return best, kept
        if waited >= wait_s:
            raise RuntimeError(f"all {per_gpu} slots on each of the GPUs {','.join(gpus)} stayed busy for "
                               f"{wait_s:.0f} s; run with --resources gpu={len(gpus) * per_gpu}")
        if waited == 0:
            log.info("all %d slots on %d GPUs are taken; waiting for one", per_gpu * len(gpus), len(gpus))
        time.sleep(1.0)
        waited += 1.0


def pin_to_free_gpu() -> FileLock | None:
    """Restrict this process to one GPU with a free slot, unless SLURM already chose one."""
    if "SLURM_JOB_GPUS" in os.environ:
        return None
    slot = acquire_gpu_slot(visible_gpus(), jobs_per_gpu())
    if slot is None:
        return None
    gpu, lock = slot
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("pinned to GPU %s (slot file %s)", gpu, Path(lock.lock_file).name)
    return lock
