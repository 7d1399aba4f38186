"""Training images/s of the pipeline against a hand-written PyTorch loop, over two windows, per precision.

    python -m bench.train_throughput [--images 10000 --epochs 4 --threads 1 --rounds 2 --precisions 32-true,bf16-mixed]

Both sides are timed over the same window, for two windows:

- **whole epochs** (the headline): what a user waits for, one epoch's start to the next one's.
  The pipeline side is `cnnlab.training.train.train` (Lightning, cnnlab's in-memory batches and
  augmentation), read back as the `epoch_wall_seconds` it logs: training, validation (5,000
  images), the probe of `data.train_probe_images` training images, the per-epoch metrics and their
  MLflow write (SQLite), the `last.ckpt` and `best.ckpt` writes and every hook. The bare loop does
  the work a hand-written loop must do for the same result: the same training steps, the same
  validation and probe forward passes (eval mode, loss and accuracy), and a checkpoint of the
  network and optimizer state written to last.pt every epoch and to best.pt when validation
  accuracy improved (the pipeline's rule). It logs nothing and computes no weight statistics:
  the pipeline's metrics, their MLflow write and the atomic rename of its checkpoints are counted
  as its cost.
- **training steps only**: the pipeline's logged `epoch_seconds` (its training stretches, end of
  `on_train_epoch_start` to `on_validation_start`) against the bare loop's training steps alone.

The bare loop trains the same network (same seed, init, optimizer, batch size, augmentation calls)
over the same in-memory tensors with index slices, at the same precision (bf16-mixed: the forward
passes and losses under `torch.autocast("cpu", dtype=torch.bfloat16)`, as Lightning runs them).
Each side runs in its own fresh process (a
loop run after another in one process finds the allocator and caches warm and reads fast), the
sides alternate, and the median is taken. The first epoch of each process is warm-up and not
counted. Each family's lines also give the fastest single epoch of each side, the figure least
moved by other load on a shared machine. The load average is printed at the start and the end.
Last line: `pipeline_vs_bare_loop_whole_epoch: <ratio>x` (the lowest of MLP and CNN at each
precision, medians of images/s); the line before it gives the step-only figure the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from bench.common import REPO, data_args, prepared_arrays, train_epoch
from bench.loader import cpu_name
from cnnlab.data.batches import EvalBatches, TrainBatches, normalize
from cnnlab.data.preprocess import load_arrays
from cnnlab.models import build_network
from cnnlab.study.studies import compose_config
from cnnlab.training.train import train
from cnnlab.training.trainer import quiet_lightning

WINDOWS = ("whole_epoch", "step_only")


@torch.no_grad()
def evaluate(net, batches, bf16: bool) -> float:
    """Accuracy over the batches in eval mode, with the loss computed as the pipeline does."""
    correct = torch.zeros(())
    n = 0
    for xb, yb in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(xb)
            F.cross_entropy(logits, yb)
        correct += (logits.argmax(1) == yb).sum()
        n += len(yb)
    return float(correct) / max(n, 1)


def bare_loop(cfg, raw: dict, epochs: int, checkpoints: Path) -> dict[str, list[float]]:
    """Seconds per epoch of a plain loop: training only, and whole epochs (validation, probe, checkpoints)."""
    x = normalize(torch.from_numpy(raw["x_train"]), None, None)
    y = torch.from_numpy(raw["y_train"]).long()
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.model)
    # The memory format the pipeline trains this network in (channels-last for a CNN), on both sides.
    cl = net.trains_channels_last(cfg.trainer.channels_last)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    torch.set_flush_denormal(cfg.trainer.flush_denormal)  # the pipeline's arithmetic on denormals, both sides
    val = EvalBatches(normalize(torch.from_numpy(raw["x_val"]), None, None), torch.from_numpy(raw["y_val"]).long(),
                      cfg.trainer.eval_batch_size, cl)
    n_probe = cfg.data.train_probe_images
    probe = EvalBatches(x[:n_probe], y[:n_probe], cfg.trainer.eval_batch_size, cl)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    batches = TrainBatches(x, y, cfg.trainer.batch_size, cfg.seed, cfg.augment, cfg.data.train_images, cl)
    checkpoints.mkdir(parents=True, exist_ok=True)
    bf16 = cfg.trainer.precision == "bf16-mixed"
    best_acc = -1.0
    seconds = {"step_only": [], "whole_epoch": []}
    for epoch in range(epochs):
        start = time.perf_counter()
        net.train()
        batches.set_epoch(epoch)
        trained_from = time.perf_counter()
        train_epoch(net, opt, batches, bf16)
        seconds["step_only"].append(time.perf_counter() - trained_from)
        net.eval()
        val_acc = evaluate(net, val, bf16)
        evaluate(net, probe, bf16)
        state = {"epoch": epoch, "net": net.state_dict(), "optimizer": opt.state_dict()}
        torch.save(state, checkpoints / "last.pt")
        if val_acc > best_acc:
            best_acc = val_acc
            torch.save(state, checkpoints / "best.pt")
        seconds["whole_epoch"].append(time.perf_counter() - start)
    return seconds


def pipeline_epochs(cfg) -> dict[str, list[float]]:
    """Seconds per epoch of `cnnlab.training.train.train`, as it logs them to MLflow."""
    train(cfg)
    run_id = json.loads((Path(cfg.run.dir) / "state.json").read_text())["mlflow_run_id"]
    client = MlflowClient(cfg.tracking.uri)

    def logged(name):
        return [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]

    return {"step_only": logged("epoch_seconds"), "whole_epoch": logged("epoch_wall_seconds")}


def one_side(args) -> None:
    """Run one side in this (fresh) process and print its steady-state images/s per window as JSON."""
    torch.set_num_threads(args.threads)
    arrays = prepared_arrays(args)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(
            [f"data.arrays={arrays}", f"data.train_images={args.images}", f"trainer.max_epochs={args.epochs}",
             f"augment={args.augment}", f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"run.dir={tmp}/run",
             "trainer.progress_bar=false", f"trainer.threads={args.threads}", f"trainer.precision={args.precision}"],
            study="lecture", variant=f"{args.family}_baseline", seed=0,
        )
        if args.side == "pipeline":
            seconds = pipeline_epochs(cfg)
        else:
            seconds = bare_loop(cfg, load_arrays(arrays), args.epochs, Path(tmp) / "bare")
    n = min(args.images, 45000)
    out = {}
    for window in WINDOWS:
        steady = seconds[window][1:]
        if len(steady) != args.epochs - 1:
            raise SystemExit(f"{args.side}: {len(seconds[window])} {window} epoch times for {args.epochs} epochs")
        out[window] = {"images_per_sec": n * len(steady) / sum(steady), "best_images_per_sec": n / min(steady)}
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--images", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per process, the first one warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--augment", default="shift_flip", help="augment config for both sides")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per side (order alternates)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed", help="trainer.precision values, comma-separated")
    parser.add_argument("--families", default="mlp,cnn", help="model families, comma-separated")
    parser.add_argument("--side", choices=["pipeline", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--family", default="mlp", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="32-true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of each process is warm-up")
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    if args.side:
        return one_side(args)
    prepared_arrays(args)
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"threads {args.threads}, {args.images} images/epoch, {args.epochs} epochs (first is warm-up), "
          f"augment={args.augment}, {args.rounds} fresh processes per side", flush=True)
    ratios = {window: {} for window in WINDOWS}
    for family, precision in [(f, p) for p in args.precisions.split(",") for f in args.families.split(",")]:
        rates = {w: {"pipeline": [], "bare": []} for w in WINDOWS}
        best = {w: {"pipeline": [], "bare": []} for w in WINDOWS}
        # Alternate the order (bare, pipeline, pipeline, bare, ...) so drift in machine speed cancels.
        order = [s for r in range(args.rounds) for s in (("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare"))]
        for side in order:
            cmd = [sys.executable, "-m", "bench.train_throughput", "--side", side, "--family", family,
                   "--precision", precision,
                   "--images", str(args.images), "--epochs", str(args.epochs), "--threads", str(args.threads),
                   "--augment", args.augment, "--archive", args.archive, "--md5", args.md5, "--workdir", args.workdir]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}).stdout
            measured = json.loads(out.strip().splitlines()[-1])
            for w in WINDOWS:
                rates[w][side].append(measured[w]["images_per_sec"])
                best[w][side].append(measured[w]["best_images_per_sec"])
        for w in WINDOWS:
            pipe, bare = statistics.median(rates[w]["pipeline"]), statistics.median(rates[w]["bare"])
            ratios[w][family, precision] = pipe / bare
            fastest = max(best[w]["pipeline"]) / max(best[w]["bare"])
            print(f"{family} {precision} {w.replace('_', '-')}: pipeline {pipe:,.0f} images/s "
                  f"{[round(v) for v in rates[w]['pipeline']]}, bare loop {bare:,.0f} images/s "
                  f"{[round(v) for v in rates[w]['bare']]}, ratio {ratios[w][family, precision]:.3f}; "
                  f"fastest epoch of each side: {max(best[w]['pipeline']):,.0f} against "
                  f"{max(best[w]['bare']):,.0f}, ratio {fastest:.3f}",
                  flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"pipeline_vs_bare_loop_step_only: {min(ratios['step_only'].values()):.3f}x")
    print(f"pipeline_vs_bare_loop_whole_epoch: {min(ratios['whole_epoch'].values()):.3f}x")


if __name__ == "__main__":
    main()
