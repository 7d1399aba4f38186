"""Training images/s of the pipeline's own step against a hand-written PyTorch loop.

    python bench/train_throughput.py [--images 10000 --epochs 3 --threads 2]

The pipeline side is `cnnlab.train.train`: Lightning, cnnlab's in-memory batches and
augmentation, MLflow logging at its default frequency (once per epoch, to a SQLite store). Its
epoch time is the `epoch_seconds` it logs: first training batch of the epoch to the start of
validation. The bare loop trains the same network (same seed, init, optimizer, batch size,
augmentation calls) over the same in-memory tensors with index slices and nothing else.
The first epoch of each is warm-up and not counted. Last line: `pipeline_vs_bare_loop: <ratio>x`
(the lower of MLP and CNN).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from bench.common import data_args, prepared_arrays
from cnnlab.batches import TrainBatches, normalize
from cnnlab.models import build_network
from cnnlab.preprocess import load_arrays
from cnnlab.study import compose_config
from cnnlab.train import quiet_lightning, train


def bare_loop(cfg, x, y, epochs: int) -> list[float]:
    """Seconds per epoch of a plain loop: same network, optimizer, batches, augmentation."""
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.model)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    batches = TrainBatches(x, y, cfg.trainer.batch_size, cfg.seed, cfg.augment, cfg.data.train_images)
    times = []
    net.train()
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        start = time.perf_counter()
        for xb, yb in batches:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--images", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--augment", default="shift_flip", help="augment config for both sides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    arrays = prepared_arrays(args)
    raw = load_arrays(arrays)
    x = normalize(torch.from_numpy(raw["x_train"]), None, None)
    y = torch.from_numpy(raw["y_train"]).long()
    print(f"threads {args.threads}, {args.images} images/epoch, {args.epochs} epochs (first is warm-up), augment={args.augment}")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("mlp", "cnn"):
            cfg = compose_config(
                [f"data.arrays={arrays}", f"data.train_images={args.images}", f"trainer.max_epochs={args.epochs}",
                 f"augment={args.augment}", f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"run.dir={tmp}/{family}",
                 "trainer.progress_bar=false", f"trainer.threads={args.threads}"],
                study="lecture", variant=f"{family}_baseline", seed=0,
            )
            train(cfg)
            run_id = json.loads((Path(tmp) / family / "state.json").read_text())["mlflow_run_id"]
            client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
            history = sorted(client.get_metric_history(run_id, "epoch_seconds"), key=lambda m: m.step)
            hist = [m.value for m in history]
            t0 = time.perf_counter()
            client.log_metric(run_id, "bench/probe", 1.0, step=0)
            log_cost = time.perf_counter() - t0
            bare = bare_loop(cfg, x, y, args.epochs)
            n = min(args.images, len(y))
            pipe_ips = n * (len(hist) - 1) / sum(hist[1:])
            bare_ips = n * (len(bare) - 1) / sum(bare[1:])
            ratios[family] = pipe_ips / bare_ips
            print(f"{family}: pipeline {pipe_ips:,.0f} images/s, bare loop {bare_ips:,.0f} images/s, "
                  f"ratio {ratios[family]:.3f}; one MLflow metric write {log_cost * 1000:.1f} ms per epoch")
    print(f"pipeline_vs_bare_loop: {min(ratios.values()):.3f}x")


if __name__ == "__main__":
    main()
