"""One GPU per concurrent job on one machine: a slot per GPU, held by an OS file lock.

Snakemake's `gpu` resource only counts jobs; it never says which GPU a job gets. Each training
process takes the first free slot and sets CUDA_VISIBLE_DEVICES before CUDA starts. The lock is
an fcntl lock, so the kernel releases it when the process ends, even by SIGKILL.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_DIR = Path(os.environ.get("CNNLAB_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "cnnlab-gpu-slots"))


def visible_gpu_count() -> int:
    """GPUs this process may use, without initializing CUDA in it."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def acquire_gpu_slot(n_gpus: int, lock_dir: Path = LOCK_DIR, wait_s: float = 3600) -> tuple[int, FileLock] | None:
    """Lock the first free of n_gpus slots and return (index, lock); None when there are no GPUs.

    Keep the returned lock referenced for the life of the process. When all slots are taken
    (more jobs than GPUs, e.g. no --resources limit) it waits up to wait_s for one to free up.
    """
    if n_gpus <= 0:
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = 0.0
    while True:
        for i in range(n_gpus):
            lock = FileLock(lock_dir / f"gpu{i}.lock")
            try:
                lock.acquire(timeout=0)
                return i, lock
            except Timeout:
                continue
        if waited >= wait_s:
            raise RuntimeError(
                f"all {n_gpus} GPU slots stayed busy for {wait_s:.0f} s; run with --resources gpu={n_gpus}"
            )
        if waited == 0:
            log.info("all %d GPU slots are taken; waiting for one", n_gpus)
        time.sleep(1.0)
        waited += 1.0


def pin_to_free_gpu() -> FileLock | None:
    """Restrict this process to one free GPU unless a scheduler already chose (SLURM, a user)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_GPUS" in os.environ:
        return None
    n = visible_gpu_count()
    slot = acquire_gpu_slot(n)
    if slot is None:
        return None
    index, lock = slot
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    log.info("pinned to GPU %d of %d", index, n)
    return lock
