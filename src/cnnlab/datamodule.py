"""The prepared arrays as a LightningDataModule: tensors resident on the training device."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from cnnlab.batches import EvalBatches, TrainBatches, normalize
from cnnlab.preprocess import load_arrays, load_stats, stats_path  # noqa: F401 (load_stats, stats_path: their old home)


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
        raw = load_arrays(self.cfg.data.arrays)
        device = (
            self.trainer.strategy.root_device if self.trainer and self.cfg.data.device_resident else torch.device("cpu")
        )
        zs = self.cfg.data.normalize == "zscore"
        mean, std = (self.stats["mean"], self.stats["std"]) if zs else (None, None)
        self.arrays = {}
        for split in ("train", "val", "test"):
            x = torch.from_numpy(raw[f"x_{split}"]).to(device)
            self.arrays[split] = (normalize(x, mean, std), torch.from_numpy(raw[f"y_{split}"]).long().to(device))

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
