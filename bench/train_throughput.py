"""Training images/s of the pipeline's own step against a hand-written PyTorch loop.

    python -m bench.train_throughput [--images 10000 --epochs 3 --threads 2]

The pipeline side is `cnnlab.train.train`: Lightning, cnnlab's in-memory batches and
augmentation, MLflow logging at its default frequency (once per epoch, to a SQLite store). Its
epoch time is the `epoch_seconds` it logs: first training batch of the epoch to the start of
validation. The bare loop trains the same network (same seed, init, optimizer, batch size,
augmentation calls) over the same in-memory tensors with index slices and nothing else.
Each side runs in its own fresh process (a loop run after another in one process finds the
allocator and caches warm and reads fast), the sides alternate, and the median is taken. The
first epoch of each is warm-up and not counted. MLflow logs once per epoch, after the timed part;
its cost per epoch is a few milliseconds. Each family's line also gives the fastest single epoch
of each side, the figure least moved by other load on a shared machine. Last line:
`pipeline_vs_bare_loop: <ratio>x` (the lower of MLP and CNN, medians of images/s).
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
from pathlib import Path

import torch
from mlflow import MlflowClient

from bench.common import REPO, data_args, prepared_arrays, timed_epochs
from cnnlab.batches import TrainBatches, normalize
from cnnlab.models import build_network
from cnnlab.preprocess import load_arrays
from cnnlab.study import compose_config
from cnnlab.train import train
from cnnlab.trainer import quiet_lightning


def bare_loop(cfg, x, y, epochs: int) -> list[float]:
    """Seconds per epoch of a plain loop: same network, optimizer, batches, augmentation."""
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.model)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    batches = TrainBatches(x, y, cfg.trainer.batch_size, cfg.seed, cfg.augment, cfg.data.train_images)
    return timed_epochs(net, opt, batches, epochs)


def pipeline_epochs(cfg, tmp: str) -> list[float]:
    """Seconds per epoch of `cnnlab.train.train`, as it logs them to MLflow."""
    train(cfg)
    run_id = json.loads((Path(cfg.run.dir) / "state.json").read_text())["mlflow_run_id"]
    client = MlflowClient(cfg.tracking.uri)
    history = sorted(client.get_metric_history(run_id, "epoch_seconds"), key=lambda m: m.step)
    return [m.value for m in history]


def one_side(args) -> None:
    """Run one side in this (fresh) process and print its steady-state images/s as JSON."""
    torch.set_num_threads(args.threads)
    arrays = prepared_arrays(args)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(
            [f"data.arrays={arrays}", f"data.train_images={args.images}", f"trainer.max_epochs={args.epochs}",
             f"augment={args.augment}", f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"run.dir={tmp}/run",
             "trainer.progress_bar=false", f"trainer.threads={args.threads}"],
            study="lecture", variant=f"{args.family}_baseline", seed=0,
        )
        if args.side == "pipeline":
            seconds = pipeline_epochs(cfg, tmp)
        else:
            raw = load_arrays(arrays)
            x = normalize(torch.from_numpy(raw["x_train"]), None, None)
            seconds = bare_loop(cfg, x, torch.from_numpy(raw["y_train"]).long(), args.epochs)
    n = min(args.images, 45000)
    steady = seconds[1:]
    print(json.dumps({"images_per_sec": n * len(steady) / sum(steady), "best_images_per_sec": n / min(steady)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--images", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--augment", default="shift_flip", help="augment config for both sides")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per side (order alternates)")
    parser.add_argument("--side", choices=["pipeline", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--family", default="mlp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    if args.side:
        return one_side(args)
    prepared_arrays(args)
    print(f"threads {args.threads}, {args.images} images/epoch, {args.epochs} epochs (first is warm-up), "
          f"augment={args.augment}, {args.rounds} fresh processes per side")
    ratios = {}
    for family in ("mlp", "cnn"):
        results = {"pipeline": [], "bare": []}
        best = {"pipeline": [], "bare": []}
        # Alternate the order (bare, pipeline, pipeline, bare, ...) so drift in machine speed cancels.
        order = [s for r in range(args.rounds) for s in (("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare"))]
        for side in order:
            cmd = [sys.executable, "-m", "bench.train_throughput", "--side", side, "--family", family,
                   "--images", str(args.images), "--epochs", str(args.epochs), "--threads", str(args.threads),
                   "--augment", args.augment, "--archive", args.archive, "--md5", args.md5, "--workdir", args.workdir]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}).stdout
            measured = json.loads(out.strip().splitlines()[-1])
            results[side].append(measured["images_per_sec"])
            best[side].append(measured["best_images_per_sec"])
        pipe, bare = statistics.median(results["pipeline"]), statistics.median(results["bare"])
        ratios[family] = pipe / bare
        best_ratio = max(best["pipeline"]) / max(best["bare"])
        print(f"{family}: pipeline {pipe:,.0f} images/s {[round(v) for v in results['pipeline']]}, "
              f"bare loop {bare:,.0f} images/s {[round(v) for v in results['bare']]}, ratio {ratios[family]:.3f}; "
              f"fastest epoch of each side: {max(best['pipeline']):,.0f} against {max(best['bare']):,.0f}, "
              f"ratio {best_ratio:.3f}")
    print(f"pipeline_vs_bare_loop: {min(ratios.values()):.3f}x")


if __name__ == "__main__":
    main()
