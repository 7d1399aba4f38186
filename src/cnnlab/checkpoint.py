"""Checkpoints written atomically and read without unpickling code (`weights_only=True`)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from cnnlab.atomic import atomic_path


class SafeCheckpointIO(TorchCheckpointIO):
    """A job killed while saving leaves the previous checkpoint intact; loading never runs code."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except RuntimeError as e:  # torch reports a failed write as RuntimeError("... file write failed")
            folder = Path(path).parent
            full = folder.exists() and shutil.disk_usage(folder).free < 64 * 2**20
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, f"could not write the checkpoint ({e})", str(path)) from e

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def load_state_dict(path: str | Path, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The network's weights from a training checkpoint (keys without the module's prefix)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
