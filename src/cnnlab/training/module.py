"""One LightningModule for every network: the loss, the lecture's penalties, metrics, optimization.

`training_step` takes one batch and returns its loss; Lightning does the rest (backward, the
optimizer step, gradient clipping and accumulation, the schedule), so its Trainer flags mean what
they say. Metrics are summed on the device and read once per epoch, so training never waits on
the host; the loss is checked for NaN/inf every `nan_check_every` steps.
"""

from __future__ import annotations

import inspect
import logging
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cnnlab.models import Network
from cnnlab.optim.lookahead import Lookahead
from cnnlab.optim.optimizers import build_optimizer, build_schedule
from cnnlab.optim.regularization import l1_penalty, l2_penalty, penalized_weights
from cnnlab.process_start import seconds_since_job_start

log = logging.getLogger(__name__)

NEAR_ZERO = 1e-3  # |w| below this counts as a pruned weight in weights/first_layer_near_zero
# Plain attributes set every step: Lightning sets _current_fx_name before and after each hook it calls
# (about 30 times a step). nn.Module.__setattr__ checks each value against parameters, modules and
# buffers first (microseconds each, ~0.1-0.3 ms a step on the CPU); these never are any of them.
PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_step_in_epoch"})


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class Classifier(pl.LightningModule):
    def __init__(self, net: Network, cfg, num_classes: int = 10):
        super().__init__()
        self.net = net
        self.optimizer_cfg, self.schedule_cfg, self.lookahead_cfg = cfg.optimizer, cfg.schedule, cfg.lookahead
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
        self._step_in_epoch = 0
        self._stretch_start: float | None = None
        self._epoch_train_seconds = 0.0
        # Whole epochs as a user waits for them: one epoch's start to the next one's (or to the end of
        # training), so its validation, probe, logging, checkpoint writes and hooks are all inside.
        self._wall_epoch, self._wall_start = 0, None
        self._epoch_walls: dict[int, float] = {}  # seconds by epoch, measured but not yet logged
        self._last_val: dict | None = None
        self._epoch_start_weights: list[torch.Tensor] | None = None
        self.epoch_lr = float("nan")
        self._summary_epoch: int | None = None
        self.fit_to_data_from = None  # a datamodule whose training images set data-derived weights
        self.lookahead: Lookahead | None = None
        self._lookahead_state: dict | None = None  # from a checkpoint, until the averager exists

    def forward(self, x):
        return self.net(x)

    def __setattr__(self, name: str, value) -> None:
        if name in PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- accumulation on the device ------------------------------------------------------------
    def _reset(self, stage: str) -> None:
        zero = torch.zeros((), device=self.device)
        # Sums are device tensors (no host sync per step); the image count is a Python int.
        sums = {"loss": zero.clone(), "correct": zero.clone(), "n": 0, "l1": zero.clone(), "l2": zero.clone()}
        setattr(self, f"_{stage}_sums", sums)
        if stage == "train":
            self._train_batches: list[tuple] = []  # (loss, logits, labels, l1, l2) per step, summed at the epoch's end

    def _accumulate(self, stage: str, loss, logits, y, l1=None, l2=None) -> None:
        # Validation, probe and test batches. Five small tensor ops per batch: on a CPU each costs
        # microseconds, so none is wasted.
        s = getattr(self, f"_{stage}_sums")
        n = y.shape[0]
        s["loss"].add_(loss.detach(), alpha=n)
        s["correct"].add_((logits.argmax(1) == y).sum())
        s["n"] += n
        if l1 is not None:
            s["l1"].add_(l1.detach(), alpha=n)
        if l2 is not None:
            s["l2"].add_(l2.detach(), alpha=n)

    def _sum_train_batches(self) -> None:
        """Add the training batches kept since the last call to the train sums: one sum per quantity
        for the epoch, instead of five small tensor ops per step (tens of microseconds on the CPU)."""
        kept, self._train_batches = self._train_batches, []
        if not kept:
            return
        s = self._train_sums
        loss, logits, y, l1, l2 = zip(*kept, strict=True)
        n = torch.tensor([len(labels) for labels in y], dtype=torch.float32, device=loss[0].device)
        s["loss"].add_((torch.stack(loss).float() * n).sum())
        s["correct"].add_((torch.cat(logits).argmax(1) == torch.cat(y)).sum())
        s["n"] += sum(len(labels) for labels in y)
        for key, terms in (("l1", l1), ("l2", l2)):
            if terms[0] is not None:
                s[key].add_((torch.stack(terms).float() * n).sum())

    def _means(self, stage: str) -> dict[str, torch.Tensor]:
        s = getattr(self, f"_{stage}_sums")
        n = max(s["n"], 1)
        return {"loss": s["loss"] / n, "acc": s["correct"] / n, "l1": s["l1"] / n, "l2": s["l2"] / n}

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.fit_to_data_from is not None:  # a new run, not a resumed one
            self.net.fit_to_data(self.fit_to_data_from.arrays["train"][0])

    def on_train_start(self) -> None:
        # After on_fit_start and after a checkpoint's weights are restored; the first step comes next.
        self.startup_seconds = seconds_since_job_start()
        la = self.lookahead_cfg
        if la.every > 0:
            self.lookahead = Lookahead(self.net, la.every, la.decay, self.trainer.estimated_stepping_batches)
            if self._lookahead_state is not None:
                self.lookahead.load_state_dict(self._lookahead_state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.lookahead is not None:
            checkpoint["cnnlab_lookahead"] = self.lookahead.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._lookahead_state = checkpoint.get("cnnlab_lookahead")

    def on_train_epoch_start(self) -> None:
        self.end_epoch_wall()  # the previous epoch ends where this one starts
        self._wall_epoch, self._wall_start = self.current_epoch, time.perf_counter()
        # Dropout and any other randomness of epoch e depends on (seed, epoch) only: resumable.
        torch.manual_seed(self.trainer.datamodule.seed * 1_000_003 + self.current_epoch)
        self._reset("train")
        self._step_in_epoch = 0
        self._last_val = None
        self._epoch_start_weights = [p.detach().clone() for p in self._trainable()]
        self.epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self._epoch_train_seconds = 0.0
        self._stretch_start = time.perf_counter()

    def training_loss(self, x, y) -> torch.Tensor:
        """The batch's loss (cross-entropy plus the penalties); its terms go into the epoch sums."""
        logits = self.net(x)
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        # The lecture's penalized loss: cross-entropy + l1 * sum|w| + l2 * sum w^2, through autograd.
        l1 = self.l1 * l1_penalty(self.weights) if self.l1 > 0 else None
        l2 = self.l2 * l2_penalty(self.weights) if self.l2 > 0 else None
        loss = ce
        for term in (l1, l2):
            if term is not None:
                loss = loss + term
        # Kept as they are (detached views on the device) and summed when the epoch's metrics are read.
        self._train_batches.append((ce.detach(), logits.detach(), y,
                                    None if l1 is None else l1.detach(), None if l2 is None else l2.detach()))
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.training_loss(*batch)
        if self.nan_check_every and self._step_in_epoch % self.nan_check_every == 0:
            self._check_finite(loss)
        self._step_in_epoch += 1
        return loss

    # Lightning reads this signature every step (whether to pass batch_idx); inspect builds it anew
    # each time (tens of microseconds) unless the function carries it.
    training_step.__signature__ = inspect.signature(training_step)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.lookahead is not None:
            # global_step counts this step only once the hook returns: this is step global_step + 1.
            self.lookahead.after_step(self.trainer.global_step + 1)

    def _check_finite(self, loss) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}; "
                "lower the learning rate or the regularization weights."
            )

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._close_stretch()
        self._reset("val")

    def on_validation_end(self) -> None:
        # With val_check_interval below 1 the epoch goes on: its next stretch of training starts now.
        self._stretch_start = time.perf_counter()

    def _close_stretch(self) -> None:
        """Add the training time since the epoch started or the last validation ended."""
        if self._stretch_start is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            self._epoch_train_seconds += now - self._stretch_start
            self.train_seconds += now - self._stretch_start
            self._stretch_start = None

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self._accumulate("val", F.cross_entropy(logits, y), logits, y)

    def on_validation_epoch_end(self) -> None:
        val = self._means("val")
        self.log("val/acc", val["acc"], prog_bar=True)
        self.log("val/loss", val["loss"])
        if not self.trainer.sanity_checking:
            self._last_val = {**val, **self._probe_training_images()}

    @torch.no_grad()
    def _probe_training_images(self) -> dict[str, torch.Tensor]:
        """Loss and accuracy on a fixed set of training images, in eval mode like validation."""
        probe = self.trainer.datamodule.train_probe() if self.trainer.datamodule is not None else None
        if probe is None:
            return {}
        self._reset("probe")
        # In validation's precision (bf16 autocast under bf16-mixed): Lightning applies it to
        # validation_step only, and this hook runs outside it; the gap compares like with like.
        with self.trainer.precision_plugin.val_step_context():
            for x, y in probe:
                logits = self.net(x)
                self._accumulate("probe", F.cross_entropy(logits, y), logits, y)
        means = self._means("probe")
        return {"probe_loss": means["loss"], "probe_acc": means["acc"]}

    def epoch_summary(self) -> dict[str, float]:
        """The epoch's metrics: training over all its batches, and its validation if it had one. Computed once an
        epoch, at its end, by whichever asks first (the MLflow callback runs before this module's hook)."""
        if self._summary_epoch == self.current_epoch:
            return self.epoch_metrics
        self._close_stretch()
        self._sum_train_batches()
        self._check_finite(self._train_sums["loss"])
        sums = self._train_sums
        n_seen = torch.tensor(float(sums["n"]), device=self.device)
        train_sums = torch.stack([sums["loss"], sums["correct"], sums["l1"], sums["l2"], n_seen])
        if self.trainer.world_size > 1:  # under DDP each process saw its own share of the batches
            train_sums = self.trainer.strategy.reduce(train_sums, reduce_op="sum")
        loss_sum, correct, l1_sum, l2_sum, n = train_sums.unbind()
        n_all = n.clamp(min=1)
        nan = torch.full((), float("nan"))
        val = self._last_val or {}
        weights = self._weight_statistics()
        values = torch.stack([
            loss_sum / n_all, correct / n_all, l1_sum / n_all, l2_sum / n_all, n,
            *(val.get(k, nan).to(n.device) for k in ("loss", "acc", "probe_loss", "probe_acc")),
            *(w.to(n.device) for w in weights.values()),
        ])
        t_loss, t_acc, l1, l2, n, v_loss, v_acc, p_loss, p_acc, *w = values.tolist()  # the epoch's one host sync
        seconds = self._epoch_train_seconds
        self.epoch_metrics = {
            "train/loss": t_loss,
            "train/acc": t_acc,
            "train/l1_penalty": l1,
            "train/l2_penalty": l2,
            # An epoch that did not validate (trainer.check_val_every_n_epoch) has no validation metrics.
            **({"val/loss": v_loss, "val/acc": v_acc} if val else {}),
            "lr": self.epoch_lr,
            "epoch_seconds": seconds,
            "train/images": n,
            "train/images_per_sec": n / seconds if seconds > 0 else float("nan"),
            **({"train_probe/loss": p_loss, "train_probe/acc": p_acc} if "probe_acc" in val else {}),
            **dict(zip(weights, w, strict=True)),
        }
        self._summary_epoch = self.current_epoch
        if self.trainer.is_global_zero:
            validated = f" val/loss {v_loss:.4f} val/acc {v_acc:.4f}" if val else ""
            log.info(
                "epoch %d: train/loss %.4f train/acc %.4f%s (%.1f s, %.0f images/s)",
                self.current_epoch, t_loss, t_acc, validated, seconds, self.epoch_metrics["train/images_per_sec"],
            )
        return self.epoch_metrics

    def on_train_epoch_end(self) -> None:
        self.epoch_summary()

    def end_epoch_wall(self) -> None:
        """Close the running epoch's wall-clock window (a no-op when none is open)."""
        if self._wall_start is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._epoch_walls[self._wall_epoch] = time.perf_counter() - self._wall_start
            self._wall_start = None

    def pop_epoch_walls(self) -> dict[int, float]:
        """Wall seconds of the whole epochs that ended since the last call, by epoch.

        An epoch's time is known only once the next one starts, so the MLflow callback logs it a step
        late; the last epoch's when training ends. An epoch cut short by a kill has none.
        """
        walls, self._epoch_walls = self._epoch_walls, {}
        return walls

    @torch.no_grad()
    def _weight_statistics(self) -> dict[str, torch.Tensor]:
        """What L1, L2 and the optimizer do to the weights: their norm, the share of near-zero weights in
        the first layer, and how far the epoch moved them (all on the device, read with the epoch's sums)."""
        first = self.net.first_layer().weight
        start = self._epoch_start_weights
        moved = torch.full((), float("nan"), device=first.device) if start is None else torch.stack(
            [(p - p0).pow(2).sum() for p, p0 in zip(self._trainable(), start, strict=True)]
        ).sum().sqrt()
        return {
            "weights/norm": torch.stack([w.pow(2).sum() for w in self.weights]).sum().sqrt(),
            "weights/first_layer_near_zero": (first.abs() < NEAR_ZERO).float().mean(),
            "weights/update_norm": moved,
        }

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

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
        optimizer = build_optimizer(self.optimizer_cfg, [p for p in self.parameters() if p.requires_grad])
        epochs = self.trainer.max_epochs
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // epochs)
        schedule = build_schedule(self.schedule_cfg, optimizer, epochs, steps_per_epoch)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}
