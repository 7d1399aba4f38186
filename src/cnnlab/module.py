"""One LightningModule for every network: the loss, the lecture's penalties, metrics, optimization.

Metrics are accumulated on the device and read once per epoch, so training never waits on the
host; the loss is checked for NaN/inf every `nan_check_every` steps.

Each `training_step` call takes several optimizer steps (`trainer.steps_per_call`, the batches of
one `StepChunks` item), with Lightning's manual optimization: Lightning's own bookkeeping around
a call costs ~0.5-1 ms, a tenth of a small MLP's step on a CPU, so it is paid once per chunk.
The batches, their order and every update are the same as one step per call. Learning-rate
schedules are stepped here too: per step (one-cycle), or brought up to the current epoch at its
start (so a resumed run gets exactly the rate an unbroken one would).
"""

from __future__ import annotations

import logging
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cnnlab.lookahead import Lookahead
from cnnlab.provenance import seconds_since_process_start
from cnnlab.regularization import l1_penalty, l2_penalty, penalized_weights

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class Classifier(pl.LightningModule):
    def __init__(self, net: torch.nn.Module, cfg, num_classes: int = 10):
        super().__init__()
        self.net = net
        self.opt_cfg, self.sched_cfg = cfg.optimizer, cfg.schedule
        # Read per step: plain Python numbers, not an OmegaConf lookup (~10 us each) in the hot loop.
        reg = cfg.regularization
        self.label_smoothing, self.l1, self.l2 = float(reg.label_smoothing), float(reg.l1), float(reg.l2)
        self.nan_check_every = int(cfg.trainer.nan_check_every)
        self.test_flip_tta = bool(cfg.trainer.test_flip_tta)
        self.num_classes = num_classes
        self.weights = penalized_weights(net)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self._reset("train")
        self.epoch_metrics: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self.train_seconds = 0.0  # the training epochs' time in this process, validation excluded
        self.automatic_optimization = False  # see the module's docstring
        self._step_in_epoch = 0
        self.lookahead: Lookahead | None = None
        self._lookahead_state: dict | None = None  # from a checkpoint, until the averager exists

    def forward(self, x):
        return self.net(x)

    # -- accumulation on the device ------------------------------------------------------------
    def _reset(self, stage: str) -> None:
        zero = torch.zeros((), device=self.device)
        # Sums are device tensors (no host sync per step); the image count is a Python int.
        sums = {"loss": zero.clone(), "correct": zero.clone(), "n": 0, "l1": zero.clone(), "l2": zero.clone()}
        setattr(self, f"_{stage}_sums", sums)

    def _accumulate(self, stage: str, loss, logits, y, l1=None, l2=None) -> None:
        # Five small tensor ops per step: on a CPU each costs microseconds, so none is wasted.
        s = getattr(self, f"_{stage}_sums")
        n = y.shape[0]
        s["loss"].add_(loss.detach(), alpha=n)
        s["correct"].add_((logits.argmax(1) == y).sum())
        s["n"] += n
        if l1 is not None:
            s["l1"].add_(l1.detach(), alpha=n)
        if l2 is not None:
            s["l2"].add_(l2.detach(), alpha=n)

    def _means(self, stage: str) -> dict[str, torch.Tensor]:
        s = getattr(self, f"_{stage}_sums")
        n = max(s["n"], 1)
        return {"loss": s["loss"] / n, "acc": s["correct"] / n, "l1": s["l1"] / n, "l2": s["l2"] / n}

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        source = getattr(self, "whiten_from", None)
        if source is not None and hasattr(self.net, "init_whitening"):
            self.net.init_whitening(source.arrays["train"][0][:5000])

    def on_train_start(self) -> None:
        # After on_fit_start (whitening) and after a checkpoint's weights are restored.
        o = self.opt_cfg
        if o.lookahead_every > 0:
            self.lookahead = Lookahead(self.net, o.lookahead_every, o.lookahead_decay, self._total_steps())
            if self._lookahead_state is not None:
                self.lookahead.load_state_dict(self._lookahead_state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.lookahead is not None:
            checkpoint["cnnlab_lookahead"] = self.lookahead.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._lookahead_state = checkpoint.get("cnnlab_lookahead")

    def _total_steps(self) -> int:
        """Optimizer steps in the whole run (not training_step calls); max_epochs is validated >= 1."""
        self.trainer.fit_loop.setup_data()  # makes the training loader now; a no-op once it exists
        loader = self.trainer.train_dataloader
        return int(self.trainer.max_epochs * getattr(loader, "steps", len(loader)))

    def on_train_epoch_start(self) -> None:
        # Dropout and any other randomness of epoch e depends on (seed, epoch) only: resumable.
        torch.manual_seed(self.trainer.datamodule.seed * 1_000_003 + self.current_epoch)
        self._reset("train")
        self._step_in_epoch = 0
        sched = self._scheduler()
        if self.sched_cfg.name in ("step", "cosine"):
            with warnings.catch_warnings():
                # Right after a resume this runs before the process's first optimizer step, which
                # PyTorch warns about; the optimizer's state came from the checkpoint, so no step is lost.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                while sched.last_epoch < self.current_epoch:  # idempotent: right after a resume too
                    sched.step()
        self.epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.startup_seconds is None:
            # Process start to first training step: imports, data loading, model, Lightning setup.
            self.startup_seconds = seconds_since_process_start()

    def training_loss(self, x, y) -> torch.Tensor:
        """The batch's loss (cross-entropy plus the penalties); its terms go into the epoch sums."""
        logits = self.net(x)
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        loss = ce
        l1 = l2 = None
        if self.l1 > 0:
            l1 = self.l1 * l1_penalty(self.weights)
            loss = loss + l1
        if self.l2 > 0:
            l2 = self.l2 * l2_penalty(self.weights)
            loss = loss + l2
        self._accumulate("train", ce, logits, y, l1, l2)
        return loss

    def training_step(self, steps, call_idx):
        """Take one optimizer step per (x, y) batch of `steps`; return the last loss, detached."""
        opt = self.optimizers()
        per_step_sched = self._scheduler() if self.sched_cfg.name == "onecycle" else None
        loss = None
        for x, y in steps:
            loss = self.training_loss(x, y)
            if self.nan_check_every and self._step_in_epoch % self.nan_check_every == 0:
                self._check_finite(loss)
            self._step_in_epoch += 1
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            if per_step_sched is not None:
                per_step_sched.step()
            if self.lookahead is not None:
                self.lookahead.after_step(self.trainer.global_step)
        return None if loss is None else loss.detach()

    def _scheduler(self):
        return None if self.sched_cfg.name == "constant" else self.lr_schedulers()

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
            self.train_seconds += self.epoch_seconds
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
        n_seen = torch.tensor(float(sums["n"]), device=self.device)
        train_sums = torch.stack([sums["loss"], sums["correct"], sums["l1"], sums["l2"], n_seen])
        if self.trainer.world_size > 1:  # under DDP each process saw its own share of the batches
            train_sums = self.trainer.strategy.reduce(train_sums, reduce_op="sum")
        loss_sum, correct, l1_sum, l2_sum, n = train_sums.unbind()
        n_all = n.clamp(min=1)
        values = torch.stack([loss_sum / n_all, correct / n_all, l1_sum / n_all, l2_sum / n_all, val["loss"], val["acc"], n])
        t_loss, t_acc, l1, l2, v_loss, v_acc, n = values.tolist()  # the epoch's one host sync
        if self.sched_cfg.name == "plateau":
            sched = self._scheduler()
            if sched.last_epoch < self.current_epoch + 1:  # after a resume this step is in the checkpoint
                sched.step(v_acc)
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
        elif s.name == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=10 * o.lr, total_steps=self._total_steps(), pct_start=s.pct_start
            )
        # Stepped by this module (see the module's docstring), so Lightning's interval is moot.
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched}}
