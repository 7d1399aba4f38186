"""Where a run came from: the code's commit, library versions, the device."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

import torch

from cnnlab.forkserver import process_start_time

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def git_state(root: Path = SOURCE_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding this package; ('unknown', None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode:
            return "unknown", None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import pytorch_lightning

    import cnnlab

    return {
        "torch_version": torch.__version__,
        "lightning_version": pytorch_lightning.__version__,
        "cnnlab_version": cnnlab.__version__,
        "python_version": platform.python_version(),
    }


_JOB_STARTED: list[float] = []  # a job forked by a warm process: its client's start (cnnlab.forkserver)


def set_process_start(epoch_seconds: float | None) -> None:
    """Count from the job's own process start, not this forked child's (None: this process's)."""
    _JOB_STARTED[:] = [] if epoch_seconds is None else [float(epoch_seconds)]


def seconds_since_process_start() -> float | None:
    """Wall seconds since this job's process was created, None where unknown."""
    started = _JOB_STARTED[0] if _JOB_STARTED else process_start_time()
    return None if started is None else time.time() - started
