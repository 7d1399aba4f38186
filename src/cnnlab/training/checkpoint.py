"""Checkpoints written atomically, read without unpickling code (`weights_only=True`), and kept
valid when the project folder moves."""

from __future__ import annotations

import errno
import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from cnnlab.atomic import atomic_path

# What Lightning needs to resume from a checkpoint (the rest is optional)
RESUME_KEYS = ("state_dict", "epoch", "global_step", "loops", "callbacks", "optimizer_states")


class SafeCheckpointIO(TorchCheckpointIO):
    """A job killed while saving leaves the previous checkpoint intact; loading never runs code.

    `before_publish`: what must be finished before a checkpoint appears under its name (the
    epoch's metrics write, cnnlab.tracking.callback), called once the file is written aside.
    """

    def __init__(self):
        super().__init__()
        self.before_publish: list[Callable[[], None]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        # A job killed while its write waited (before_publish) left the file written aside: the run's
        # one writer clears it now, so the folder holds only published checkpoints.
        for stale in Path(path).parent.glob(f".{Path(path).name}.*"):
            stale.unlink(missing_ok=True)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
                for wait in self.before_publish:
                    wait()
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


def resumable(path: str | Path) -> str | None:
    """None when path is a complete training checkpoint; else why not, in a few words.

    torch's own message for a damaged file suggests `weights_only=False`, which would run code
    from the file: it is never shown.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, not a torch file at all
        return f"it cannot be read: {type(e).__name__}"
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in RESUME_KEYS):
        return "it is not a complete training checkpoint"
    return None


class RelocatableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved paths follow the run folder when the project folder moves.

    Lightning keeps `dirpath`, `best_model_path` and the top-k paths absolute in every checkpoint
    and, when `dirpath` differs on resume, forgets the best score and keeps the old best path. The
    paths are re-rooted here first, so a moved run resumes exactly as it would have in place.
    """

    @functools.cached_property
    def state_key(self) -> str:
        # Lightning keys a callback's saved state by its class name: keep ModelCheckpoint's, so
        # checkpoints written before this class existed still resume. Cached: Lightning also reads it
        # around every hook it calls (about 12 times a step for two checkpoints), and building it
        # formats the callback's settings each time; they do not change after __init__.
        return ModelCheckpoint.state_key.fget(self).replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        # cnnlab's checkpoints are written at epoch ends (and validations): with no step or time
        # interval set there is nothing to decide after a batch.
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def moved(path):
                if not path:
                    return path
                try:
                    return str(Path(self.dirpath) / Path(path).relative_to(old))
                except ValueError:  # not inside the old folder: leave it alone
                    return path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": moved(state_dict.get("best_model_path", "")),
                "kth_best_model_path": moved(state_dict.get("kth_best_model_path", "")),
                "last_model_path": moved(state_dict.get("last_model_path", "")),
                "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)
