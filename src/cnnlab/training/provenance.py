"""Where a run came from: the code's commit, library versions, the device."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

SOURCE_ROOT = Path(__file__).resolve().parents[3]


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
