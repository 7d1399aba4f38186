"""Checkpoints written atomically and read without unpickling code (`weights_only=True`)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from cnnlab.atomic import atomic_path


class SafeCheckpointIO(TorchCheckpointIO):
    """A job killed while saving leaves the previous checkpoint intact; loading never runs code."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def load_state_dict(path: str | Path, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The network's weights from a training checkpoint (keys without the module's prefix)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
