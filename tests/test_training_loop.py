"""The training loop: Lightning's own flags, learning-rate schedules, lookahead, resume.

Real `cnnlab.training.train.train` runs on a tiny prepared data set, read back from a real MLflow store.
"""

import gc
import json
import math
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from torch._dynamo.utils import counters

import cnnlab.optim.regularization
import cnnlab.tracking.callback
import cnnlab.training.checkpoint
import cnnlab.training.module
from cnnlab.errors import UserError
from cnnlab.models import build_network
from cnnlab.optim.lookahead import Lookahead
from cnnlab.study.studies import compose_config
from cnnlab.training.rundir import RunDir
from cnnlab.training.train import train
from cnnlab.training.trainer import build_trainer
from tests.helpers import record_forward_passes, tiny_run_config

# 400 training images in batches of 32: 13 optimizer steps per epoch, the last one short.
STEPS_PER_EPOCH = 13


def run_config(tmp_path, arrays, name, *overrides):
    return tiny_run_config(tmp_path, arrays, name, "model.dropout=0.1", "augment=shift_flip", *overrides)


def history(tmp_path, result, name):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return [m.value for m in sorted(client.get_metric_history(result["mlflow_run_id"], name), key=lambda m: m.step)]


def initial_weights(cfg) -> dict:
    """The network train() starts from: it seeds torch with the run's seed, then builds it."""
    torch.manual_seed(cfg.seed)
    return build_network(cfg.model).state_dict()


def trained_weights(cfg) -> dict:
    ckpt = torch.load(f"{cfg.run.dir}/checkpoints/last.ckpt", weights_only=True)
    return {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def update_norm(cfg) -> float:
    before, after = initial_weights(cfg), trained_weights(cfg)
    return float(torch.cat([(after[k] - before[k]).flatten() for k in before]).norm())


def test_gradient_clip_val_bounds_each_update(tmp_path, arrays):
    # One plain-SGD step: the update is lr times the gradient, whose norm clipping caps at 1e-3.
    one_step = ("trainer.limit_train_batches=1", "trainer.max_epochs=1", "optimizer.lr=1.0", "augment=none")
    clipped = run_config(tmp_path, arrays, "clipped", *one_step, "trainer.gradient_clip_val=0.001")
    free = run_config(tmp_path, arrays, "free", *one_step)
    train(clipped)
    train(free)
    assert update_norm(clipped) == pytest.approx(0.001, rel=1e-3)
    assert update_norm(free) > 10 * update_norm(clipped)


def test_clipping_a_fused_optimizer_under_mixed_precision_is_one_sentence_and_unfused_it_clips(tmp_path, arrays):
    # Lightning cannot clip after a fused optimizer has unscaled inside its own step.
    mixed = ("optimizer=adam", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=0.5", "trainer.max_epochs=1")
    with pytest.raises(UserError, match=r"cannot clip the gradients of a fused optimizer under bf16-mixed precision; "
                                        r"add optimizer.fused=false"):
        build_trainer(run_config(tmp_path, arrays, "fused", *mixed, "optimizer.fused=true"), RunDir(tmp_path / "f"), [])
    build_trainer(run_config(tmp_path, arrays, "unfused", *mixed, "optimizer.fused=false"), RunDir(tmp_path / "u"), [])
    assert compose_config(["optimizer=adam"]).optimizer.fused is True  # Adam runs fused by default


def test_accumulating_two_half_batches_takes_the_steps_of_one_whole_batch(tmp_path, arrays):
    # Two consecutive batches of 16 are the same 32 images as one batch of 32, and Lightning averages
    # their gradients: with no dropout or batch norm the updates are the same.
    common = ("model.dropout=0", "trainer.max_epochs=2", "data.train_images=384")
    whole = train(run_config(tmp_path, arrays, "whole", *common))
    halves = train(run_config(tmp_path, arrays, "halves", *common, "trainer.batch_size=16",
                              "trainer.accumulate_grad_batches=2"))
    for name in ("train/loss", "val/loss", "val/acc"):
        assert history(tmp_path, halves, name) == pytest.approx(history(tmp_path, whole, name), rel=1e-4), name
    assert halves["test_acc"] == whole["test_acc"]


@pytest.mark.parametrize("limit, images", [(3, 3 * 32), (0.5, 6 * 32)])
def test_limit_train_batches_counts_batches(tmp_path, arrays, limit, images):
    result = train(run_config(tmp_path, arrays, "run", f"trainer.limit_train_batches={limit}", "trainer.max_epochs=2"))
    assert history(tmp_path, result, "train/images") == [images, images]


def test_val_check_interval_validates_twice_per_epoch(tmp_path, arrays, monkeypatch):
    calls = []
    end = cnnlab.training.module.Classifier.on_validation_epoch_end

    def counted(self):
        calls.append(self.current_epoch)
        end(self)

    monkeypatch.setattr(cnnlab.training.module.Classifier, "on_validation_epoch_end", counted)
    result = train(run_config(tmp_path, arrays, "run", "trainer.val_check_interval=0.5", "trainer.max_epochs=2"))
    assert calls == [0, 0, 1, 1]
    # One point per epoch in MLflow, each with the whole epoch's training images.
    assert history(tmp_path, result, "train/images") == [400, 400]


def expected_one_cycle(lr, epochs, pct_start):
    """The one-cycle rate at the start of each epoch, from PyTorch's own scheduler."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * STEPS_PER_EPOCH,
                                                pct_start=pct_start)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        for _ in range(STEPS_PER_EPOCH):
            opt.step()
            sched.step()
    return rates


@pytest.mark.parametrize("schedule, expected", [
    (("schedule=step", "schedule.step_size=2", "schedule.gamma=0.5"), lambda e: 0.01 * 0.5 ** (e // 2)),
    (("schedule=cosine",), lambda e: 0.01 * (1 + math.cos(math.pi * e / 5)) / 2),
    (("schedule=onecycle",), lambda e: expected_one_cycle(0.01, 5, 0.25)[e]),
])
def test_each_schedule_sets_the_rate_its_formula_gives(tmp_path, arrays, schedule, expected):
    result = train(run_config(tmp_path, arrays, "run", *schedule, "trainer.max_epochs=5"))
    assert history(tmp_path, result, "lr") == pytest.approx([expected(e) for e in range(5)], rel=1e-6)


def test_plateau_halves_the_rate_after_its_patience_runs_out(tmp_path, arrays):
    # A rate this small leaves val/acc where it is, so the plateau schedule must act.
    result = train(run_config(tmp_path, arrays, "run", "schedule=plateau", "schedule.patience=1",
                              "optimizer.lr=1e-6", "trainer.max_epochs=6"))
    val_acc, rates = history(tmp_path, result, "val/acc"), history(tmp_path, result, "lr")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-6)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1)
    replay = []
    for acc in val_acc:
        replay.append(opt.param_groups[0]["lr"])
        sched.step(acc)
    assert rates == pytest.approx(replay, rel=1e-6)
    assert rates[-1] < rates[0], (val_acc, rates)


class Interrupted(Exception):
    pass


def straight_and_resumed(tmp_path, arrays, monkeypatch, overrides) -> tuple[dict, dict, list[int]]:
    """A run trained straight through, and the same run stopped as its epoch 3 starts and started
    again; with the epochs the second start trained."""
    straight = train(run_config(tmp_path, arrays, "straight", *overrides))
    start = cnnlab.training.module.Classifier.on_train_epoch_start

    def stop_at_epoch_3(self):
        if self.current_epoch == 3:
            raise Interrupted
        start(self)

    monkeypatch.setattr(cnnlab.training.module.Classifier, "on_train_epoch_start", stop_at_epoch_3)
    with pytest.raises(Interrupted):
        train(run_config(tmp_path, arrays, "broken", *overrides))
    epochs_after = []

    def record(self):
        epochs_after.append(self.current_epoch)
        start(self)

    monkeypatch.setattr(cnnlab.training.module.Classifier, "on_train_epoch_start", record)
    resumed = train(run_config(tmp_path, arrays, "broken", *overrides))
    return straight, resumed, epochs_after


@pytest.mark.parametrize("schedule", [("schedule=cosine",), ("schedule=plateau", "schedule.patience=0"),
                                      ("schedule=onecycle", "lookahead.every=2")])
def test_a_run_resumed_after_an_interruption_gets_the_same_rates_and_results(tmp_path, arrays, monkeypatch, schedule):
    straight, resumed, epochs_after = straight_and_resumed(tmp_path, arrays, monkeypatch,
                                                           (*schedule, "trainer.max_epochs=5"))
    assert epochs_after == [3, 4]  # it went on from its last checkpoint, not from the start

    for name in ("lr", "train/loss", "val/acc"):
        assert history(tmp_path, resumed, name) == history(tmp_path, straight, name), name
    assert resumed["test_acc"] == straight["test_acc"]


def test_lookahead_averages_on_its_schedule_and_ends_on_the_average():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    la = Lookahead(net, every=5, decay=0.95, total_steps=100)
    assert la.strength(0) == 0 and la.strength(100) == pytest.approx(0.95**5)
    assert la.strength(50) == pytest.approx(0.95**5 / 8)  # cubic in progress
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.add_(2.0)
    la.after_step(7)  # not a multiple of 5: nothing happens
    assert torch.equal(la.average["0.weight"], start["0.weight"])
    la.after_step(50)
    keep = la.strength(50)
    expected = keep * start["0.weight"] + (1 - keep) * (start["0.weight"] + 1)
    assert torch.allclose(la.average["0.weight"], expected) and torch.allclose(net[0].weight, expected)
    assert torch.allclose(net[1].running_mean, keep * start["1.running_mean"] + (1 - keep) * 2.0)
    assert "1.num_batches_tracked" not in la.average  # integer state is left alone
    average = la.average["0.weight"].clone()
    with torch.no_grad():
        net[0].weight.add_(5.0)
    la.after_step(100)  # the last step averages in the final weights and ends on the average
    keep = 0.95**5
    assert torch.allclose(net[0].weight, keep * average + (1 - keep) * (average + 5.0))
    assert torch.equal(net[0].weight, la.average["0.weight"])


def test_lookahead_takes_in_the_last_weights_when_steps_do_not_divide_evenly():
    net = torch.nn.Linear(2, 2)
    la = Lookahead(net, every=5, decay=0.95, total_steps=3)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    la.after_step(3)
    keep = 0.95**5  # full strength: step 3 of 3
    assert torch.allclose(net.weight, keep * start + (1 - keep) * (start + 1.0))


def test_lookahead_changes_what_a_run_learns(tmp_path, arrays):
    plain = train(run_config(tmp_path, arrays, "plain", "trainer.max_epochs=2"))
    averaged = train(run_config(tmp_path, arrays, "averaged", "trainer.max_epochs=2", "lookahead.every=2"))
    assert history(tmp_path, plain, "train/loss")[0] != history(tmp_path, averaged, "train/loss")[0]


def test_a_whole_epoch_is_timed_with_its_checkpoint_writes(tmp_path, arrays, monkeypatch):
    # Each checkpoint write made 0.2 s slower must show in its epoch's epoch_wall_seconds, the last
    # epoch's too (logged when training ends), on top of its epoch_seconds (training stretches only).
    writes: dict[int, int] = {}
    save = cnnlab.training.checkpoint.SafeCheckpointIO.save_checkpoint

    def slow_save(self, checkpoint, path, storage_options=None):
        time.sleep(0.2)
        writes[checkpoint["epoch"]] = writes.get(checkpoint["epoch"], 0) + 1
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(cnnlab.training.checkpoint.SafeCheckpointIO, "save_checkpoint", slow_save)
    result = train(run_config(tmp_path, arrays, "run", "trainer.max_epochs=3"))
    walls, trained = history(tmp_path, result, "epoch_wall_seconds"), history(tmp_path, result, "epoch_seconds")
    assert len(walls) == 3 and all(writes[e] >= 1 for e in range(3)), (walls, writes)
    for e in range(3):
        assert walls[e] - trained[e] >= 0.2 * writes[e], (e, walls, trained, writes)


def test_validating_every_second_epoch_leaves_training_metrics_every_epoch_and_the_best_checkpoint_validated(
        tmp_path, arrays):
    result = train(run_config(tmp_path, arrays, "run", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = {name: [m.step for m in client.get_metric_history(result["mlflow_run_id"], name)]
             for name in ("train/loss", "val/acc", "val/loss", "train_probe/acc")}
    assert steps == {"train/loss": [0, 1, 2, 3], "val/acc": [1, 3], "val/loss": [1, 3], "train_probe/acc": [1, 3]}
    best = torch.load(tmp_path / "run/checkpoints/best.ckpt", weights_only=True)
    val = dict(zip(steps["val/acc"], history(tmp_path, result, "val/acc"), strict=True))
    assert best["epoch"] == max(val, key=val.get)  # ranked among the validated epochs only
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["epoch"] == 3


def test_a_run_validating_every_second_epoch_resumes_to_the_same_results(tmp_path, arrays, monkeypatch):
    # Its last checkpoint before the stop is of epoch 2, which did not validate.
    overrides = ("schedule=cosine", "trainer.max_epochs=6", "trainer.check_val_every_n_epoch=2")
    straight, resumed, epochs_after = straight_and_resumed(tmp_path, arrays, monkeypatch, overrides)
    assert epochs_after == [3, 4, 5]
    for name in ("lr", "train/loss", "val/acc", "train_probe/acc"):
        assert history(tmp_path, resumed, name) == history(tmp_path, straight, name), name
    assert len(history(tmp_path, resumed, "val/acc")) == 3
    assert resumed["test_acc"] == straight["test_acc"]


@pytest.mark.parametrize("every", [1, 2])
def test_a_checkpoint_appears_only_once_its_epochs_metrics_are_in_the_store(tmp_path, arrays, monkeypatch, every):
    # The metrics are written on a thread beside the checkpoint's serialization; a store made 0.3 s
    # slower per write must still hold epoch e's metrics whenever a checkpoint of epoch e is published.
    write = cnnlab.tracking.callback.with_retry

    def slow_write(*args, **kwargs):
        time.sleep(0.3)
        return write(*args, **kwargs)

    published: list[tuple[int, int]] = []
    save = cnnlab.training.checkpoint.SafeCheckpointIO.save_checkpoint
    cfg = run_config(tmp_path, arrays, "run", "trainer.max_epochs=4", f"trainer.check_val_every_n_epoch={every}")

    def save_and_look(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        run_id = json.loads((Path(cfg.run.dir) / "state.json").read_text())["mlflow_run_id"]
        logged = MlflowClient(cfg.tracking.uri).get_metric_history(run_id, "train/loss")
        published.append((checkpoint["epoch"], len(logged)))

    monkeypatch.setattr(cnnlab.tracking.callback, "with_retry", slow_write)
    monkeypatch.setattr(cnnlab.training.checkpoint.SafeCheckpointIO, "save_checkpoint", save_and_look)
    result = train(cfg)
    assert {epoch for epoch, _ in published} == {0, 1, 2, 3}
    assert all(logged >= epoch + 1 for epoch, logged in published), published
    assert len(history(tmp_path, result, "val/acc")) == 4 // every


def record_training_forward(monkeypatch) -> dict[str, set]:
    """What the network meets in the training steps of a real run, seen by hooks put on it as training
    starts: whether the batches and the conv weights are channels-last, the dtype of each layer's output."""
    seen = {"batch_channels_last": set(), "weights_channels_last": set(), "activation_dtypes": set()}
    start = cnnlab.training.module.Classifier.on_train_start

    def before_forward(net, args):
        if net.training:
            seen["batch_channels_last"].add(args[0].is_contiguous(memory_format=torch.channels_last))
            seen["weights_channels_last"].update(m.weight.is_contiguous(memory_format=torch.channels_last)
                                                 for m in net.modules() if isinstance(m, torch.nn.Conv2d))

    def after_layer(layer, args, output):
        if layer.training:
            seen["activation_dtypes"].add(output.dtype)

    def hooked(self):
        start(self)
        self.net.register_forward_pre_hook(before_forward)
        for m in self.net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.register_forward_hook(after_layer)

    monkeypatch.setattr(cnnlab.training.module.Classifier, "on_train_start", hooked)
    return seen


@pytest.mark.parametrize("bf16, channels_last", [(True, True), (True, False), (False, True)],
                         ids=["bf16+channels_last", "bf16", "channels_last"])
def test_the_gpu_settings_take_effect_in_training_on_the_cpu(tmp_path, arrays, monkeypatch, bf16, channels_last):
    # bf16 autocast and channels-last: the code path a GPU run takes. Each setting is on in one run
    # and off in another, so each check is seen to fail without its setting.
    seen = record_training_forward(monkeypatch)
    result = train(run_config(tmp_path, arrays, "run", "model=cnn", "model.channels=[8,16]", "model.batch_norm=true",
                              f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}",
                              f"trainer.channels_last={str(channels_last).lower()}", "trainer.max_epochs=2",
                              "optimizer=adam", "optimizer.lr=0.003"))
    assert seen["activation_dtypes"] == {torch.bfloat16 if bf16 else torch.float32}
    assert seen["batch_channels_last"] == {channels_last}
    assert seen["weights_channels_last"] == {channels_last}  # still so after the optimizer's updates
    losses = history(tmp_path, result, "train/loss")
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]
    assert result["test_acc"] > 0.1  # ten classes: above chance after two epochs


def denormal_survives() -> bool:
    """Whether this thread's CPU keeps a denormal float (1e-39) through a multiplication."""
    return float(torch.tensor([1e-39]) * 1.0) != 0.0


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_holds_for_the_training_steps_only(tmp_path, arrays, monkeypatch, flush):
    seen = set()
    step = cnnlab.training.module.Classifier.training_step

    def recorded(self, *args, **kwargs):
        seen.add(denormal_survives())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(cnnlab.training.module.Classifier, "training_step", recorded)
    assert denormal_survives()
    train(run_config(tmp_path, arrays, "run", "trainer.max_epochs=1", f"trainer.flush_denormal={str(flush).lower()}"))
    assert seen == {not flush}
    assert denormal_survives()  # the caller's arithmetic is as it was


@pytest.mark.slow
def test_torch_compile_trains_through_the_same_loop(tmp_path, arrays):
    # No dropout: compiled code draws its random masks from another generator.
    torch._dynamo.reset()
    counters.clear()
    result = train(
        run_config(tmp_path, arrays, "run", "trainer.compile=true", "trainer.max_epochs=2", "model.dropout=0")
    )
    compiled = {"graphs": counters["stats"]["unique_graphs"], "frames": counters["frames"]["ok"]}
    counters.clear()
    plain = train(run_config(tmp_path, arrays, "plain", "trainer.max_epochs=2", "model.dropout=0"))
    assert compiled["graphs"] > 0 and compiled["frames"] > 0, compiled
    assert counters["stats"]["unique_graphs"] == 0 and counters["frames"]["total"] == 0  # nothing compiled without it
    assert history(tmp_path, result, "train/loss") == pytest.approx(history(tmp_path, plain, "train/loss"), rel=1e-3)


def test_training_runs_with_the_set_up_heap_frozen_and_thaws_it_after(tmp_path, arrays, monkeypatch):
    # A full collection during training walks only what training made; the caller's process
    # collects as before once train() returns.
    assert gc.get_freeze_count() == 0
    seen = record_forward_passes(monkeypatch, gc.get_freeze_count)
    train(run_config(tmp_path, arrays, "run", "trainer.max_epochs=1"))
    assert any(training for training, _ in seen) and min(frozen for _, frozen in seen) > 0
    assert gc.get_freeze_count() == 0
