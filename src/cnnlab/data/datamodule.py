"""The prepared arrays as a LightningDataModule: tensors resident on the training device."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from cnnlab.data.batches import EvalBatches, TrainBatches, normalize
from cnnlab.data.preprocess import load_arrays, load_stats
from cnnlab.data.subset import fixed_subset

# Filled in the warm process (cnnlab.launch.forkserver) before it forks a job: the arrays of the file its
# jobs name, images already scaled to [0, 1]. The jobs forked from it share these pages instead of
# each reading and scaling the 180 MB file at start-up.
_preloaded: dict = {}


def _identity(path) -> tuple:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read(path) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in load_arrays(path).items()}


def preload(path) -> None:
    """Load path's arrays, images scaled to [0, 1] as `normalize` scales them, for the jobs to come."""
    identity = _identity(path)
    if _preloaded.get("identity") == identity:
        return
    _preloaded.clear()
    arrays = {k: normalize(v, None, None) if k.startswith("x_") else v for k, v in _read(path).items()}
    _preloaded.update(identity=identity, arrays=arrays)


def _arrays(path) -> dict[str, torch.Tensor]:
    """path's arrays as tensors: the preloaded ones when they are of this very file (same inode,
    size and modification time), else read now."""
    try:
        preloaded = _preloaded.get("identity") == _identity(path)
    except OSError:
        preloaded = False
    return _preloaded["arrays"] if preloaded else _read(path)


class ArrayDataModule(pl.LightningDataModule):
    def __init__(self, cfg, channels_last: bool = False):
        super().__init__()
        self.cfg = cfg
        self.seed = int(cfg.seed)
        self.channels_last = channels_last
        self.stats = load_stats(cfg.data.arrays)
        self.arrays = None

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        raw = _arrays(self.cfg.data.arrays)
        # The whole data set lives on the training device: batches are slices of it, never copies.
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        zs = self.cfg.data.normalize == "zscore"
        mean, std = (self.stats["mean"], self.stats["std"]) if zs else (None, None)
        self.arrays = {}
        for split in ("train", "val", "test"):
            x, y = raw[f"x_{split}"], raw[f"y_{split}"]
            if split == "train" and self.cfg.data.train_subset:
                keep = fixed_subset(y, self.cfg.data.train_subset, self.cfg.data.train_subset_seed)
                x, y = x.index_select(0, keep), y.index_select(0, keep)
            self.arrays[split] = (normalize(x.to(device), mean, std), y.long().to(device))

    def train_dataloader(self):
        x, y = self.arrays["train"]
        t = self.cfg.trainer
        batches = TrainBatches(
            x, y, t.batch_size, self.seed, self.cfg.augment, self.cfg.data.train_images, self.channels_last
        )
        if self.trainer is not None and self.trainer.world_size > 1:
            batches.shard(self.trainer.global_rank, self.trainer.world_size)
        return batches

    def val_dataloader(self):
        return EvalBatches(*self.arrays["val"], self.cfg.trainer.eval_batch_size, self.channels_last)

    def train_probe(self) -> EvalBatches | None:
        """The first data.train_probe_images training images, unaugmented: the run's accuracy on what it
        trains on, measured the way validation is (eval mode), so the train/validation gap is fair."""
        n = self.cfg.data.train_probe_images
        if n <= 0:
            return None
        x, y = self.arrays["train"]
        return EvalBatches(x[:n], y[:n], self.cfg.trainer.eval_batch_size, self.channels_last)

    def test_dataloader(self):
        return EvalBatches(*self.arrays["test"], self.cfg.trainer.eval_batch_size, self.channels_last)
