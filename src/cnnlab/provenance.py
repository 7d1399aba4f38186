"""Where a run came from: the code's commit, library versions, the device."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

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


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process was created (Linux /proc), None where unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after the command name
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
