"""One LightningModule for every network: the loss, the lecture's penalties, metrics, optimization.

Metrics are accumulated on the device and read once per epoch, so training never waits on the
host; the loss is checked for NaN/inf every `nan_check_every` batches.
"""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cnnlab.errors import UserError
from cnnlab.provenance import seconds_since_process_start
from cnnlab.regularization import l1_penalty, l2_penalty, penalized_weights

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class Classifier(pl.LightningModule):
    def __init__(self, net: torch.nn.Module, cfg, num_classes: int = 10):
        super().__init__()
        self.net = net
        self.opt_cfg, self.sched_cfg, self.reg_cfg = cfg.optimizer, cfg.schedule, cfg.regularization
        self.nan_check_every = cfg.trainer.nan_check_every
        self.test_flip_tta = cfg.trainer.test_flip_tta
        self.num_classes = num_classes
        self.weights = penalized_weights(net)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self._reset("train")
        self.epoch_metrics: dict[str, float] = {}
        self.startup_seconds: float | None = None

    def forward(self, x):
        return self.net(x)

    # -- accumulation on the device ------------------------------------------------------------
    def _reset(self, stage: str) -> None:
        zero = torch.zeros((), device=self.device)
        setattr(self, f"_{stage}_sums", {"loss": zero.clone(), "correct": zero.clone(), "n": zero.clone(), "l1": zero.clone(), "l2": zero.clone()})

    def _accumulate(self, stage: str, loss, logits, y, l1=None, l2=None) -> None:
        s = getattr(self, f"_{stage}_sums")
        n = y.shape[0]
        s["loss"] += loss.detach().float() * n
        s["correct"] += (logits.argmax(1) == y).sum()
        s["n"] += n
        if l1 is not None:
            s["l1"] += l1.detach().float() * n
        if l2 is not None:
            s["l2"] += l2.detach().float() * n

    def _means(self, stage: str) -> dict[str, torch.Tensor]:
        s = getattr(self, f"_{stage}_sums")
        n = s["n"].clamp(min=1)
        return {"loss": s["loss"] / n, "acc": s["correct"] / n, "l1": s["l1"] / n, "l2": s["l2"] / n}

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        source = getattr(self, "whiten_from", None)
        if source is not None and hasattr(self.net, "init_whitening"):
            self.net.init_whitening(source.arrays["train"][0][:5000])
    def on_train_epoch_start(self) -> None:
        # Dropout and any other randomness of epoch e depends on (seed, epoch) only: resumable.
        torch.manual_seed(self.trainer.datamodule.seed * 1_000_003 + self.current_epoch)
        self._reset("train")
        self.epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.startup_seconds is None:
            # Process start to first training step: imports, data loading, model, Lightning setup.
            self.startup_seconds = seconds_since_process_start()

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        ce = F.cross_entropy(logits, y, label_smoothing=self.reg_cfg.label_smoothing)
        loss = ce
        l1 = l2 = None
        if self.reg_cfg.l1 > 0:
            l1 = self.reg_cfg.l1 * l1_penalty(self.weights)
            loss = loss + l1
        if self.reg_cfg.l2 > 0:
            l2 = self.reg_cfg.l2 * l2_penalty(self.weights)
            loss = loss + l2
        self._accumulate("train", ce, logits, y, l1, l2)
        if self.nan_check_every and batch_idx % self.nan_check_every == 0:
            self._check_finite(loss)
        return loss

    def _check_finite(self, loss) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}; "
                "lower the learning rate or the regularization weights."
            )

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking and hasattr(self, "_epoch_start"):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.epoch_seconds = time.perf_counter() - self._epoch_start
        self._reset("val")

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self._accumulate("val", F.cross_entropy(logits, y), logits, y)

    def on_validation_epoch_end(self) -> None:
        val = self._means("val")
        self.log("val/acc", val["acc"], prog_bar=True)
        self.log("val/loss", val["loss"])
        if self.trainer.sanity_checking:
            return
        self._check_finite(self._train_sums["loss"])
        sums = self._train_sums
        train_sums = torch.stack([sums["loss"], sums["correct"], sums["l1"], sums["l2"], sums["n"]])
        if self.trainer.world_size > 1:  # under DDP each process saw its own share of the batches
            train_sums = self.trainer.strategy.reduce(train_sums, reduce_op="sum")
        loss_sum, correct, l1_sum, l2_sum, n = train_sums.unbind()
        n_all = n.clamp(min=1)
        values = torch.stack([loss_sum / n_all, correct / n_all, l1_sum / n_all, l2_sum / n_all, val["loss"], val["acc"], n])
        t_loss, t_acc, l1, l2, v_loss, v_acc, n = values.tolist()  # the epoch's one host sync
        seconds = getattr(self, "epoch_seconds", float("nan"))
        self.epoch_metrics = {
            "train/loss": t_loss,
            "train/acc": t_acc,
            "train/l1_penalty": l1,
            "train/l2_penalty": l2,
            "val/loss": v_loss,
            "val/acc": v_acc,
            "lr": self.epoch_lr,
            "epoch_seconds": seconds,
            "train/images_per_sec": n / seconds if seconds > 0 else float("nan"),
        }
        m = self.epoch_metrics
        if self.trainer.is_global_zero:
            log.info(
                "epoch %d: train/loss %.4f train/acc %.4f val/loss %.4f val/acc %.4f (%.1f s, %.0f images/s)",
                self.current_epoch, t_loss, t_acc, v_loss, v_acc, seconds, m["train/images_per_sec"],
            )

    # -- test ----------------------------------------------------------------------------------
    def on_test_start(self) -> None:
        self._reset("test")
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        if self.test_flip_tta:  # test-time augmentation: a mirrored CIFAR image is as likely as the original
            logits = (logits + self.net(x.flip(3))) / 2
        self._accumulate("test", F.cross_entropy(logits, y), logits, y)
        k = self.num_classes
        self.confusion += torch.bincount(y * k + logits.argmax(1), minlength=k * k).reshape(k, k)

    def on_test_epoch_end(self) -> None:
        m = self._means("test")
        self.log("test/acc", m["acc"])
        self.log("test/loss", m["loss"])

    # -- optimization --------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.opt_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        if o.name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
        elif o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        s = self.sched_cfg
        epochs = self.trainer.max_epochs
        if s.name == "constant":
            return opt
        if s.name == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
        elif s.name == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        elif s.name == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=s.factor, patience=s.patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/acc"}}
        elif s.name == "onecycle":
            steps = self.trainer.estimated_stepping_batches
            if not math.isfinite(steps):
                raise UserError("The one-cycle schedule needs a fixed number of epochs; set trainer.max_epochs.")
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=10 * o.lr, total_steps=int(steps), pct_start=s.pct_start)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
