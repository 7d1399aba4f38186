"""CPU time per training step of cnnlab's pipeline against a bare loop, with a network too small to hide it.

    python -m bench.step_cpu_time [--rounds 2 --precisions 32-true,bf16-mixed]

The real `cnnlab.training.train.train` (Lightning, cnnlab's module and callbacks, MLflow) trains an
MLP with 8 hidden units on batches of 8 CIFAR-10 images, so a step is mostly bookkeeping; the bare
loop trains the same network over the same `TrainBatches`. Each side's training stretch is timed
in the training thread's CPU time (`time.thread_time`), not wall time: on a shared machine other
load stretches wall time by multiples, CPU time much less. Fresh processes, alternating; printed:
the median over processes of each one's fastest epoch, in microseconds per step, and what the
pipeline adds. To measure another commit's pipeline, put its `src` first on PYTHONPATH with
`--side pipeline` (`git archive <commit> src conf | tar -x -C /tmp/old`).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from bench.common import REPO, data_args, prepared_arrays, train_epoch

IMAGES, BATCH, EPOCHS = 2048, 8, 5  # 256 steps an epoch; the first epoch is warm-up


def one_side(side: str, precision: str, arrays) -> float:
    from cnnlab.study.studies import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([
            f"data.arrays={arrays}", f"data.train_images={IMAGES}", f"trainer.max_epochs={EPOCHS}", "model=mlp",
            "model.hidden=[8]", f"trainer.batch_size={BATCH}", "data.train_probe_images=0",
            f"tracking.uri=sqlite:///{tmp}/m.db", f"run.dir={tmp}/run", "trainer.progress_bar=false",
            "trainer.threads=1", f"trainer.precision={precision}"])
        seconds: list[float] = []
        if side == "pipeline":
            from cnnlab.training import module
            from cnnlab.training.train import train
            from cnnlab.training.trainer import quiet_lightning

            quiet_lightning()
            start, stop, mark = module.Classifier.on_train_epoch_start, module.Classifier.on_validation_start, [0.0]

            def timed_start(self):
                start(self)
                mark[0] = time.thread_time()

            def timed_stop(self):
                seconds.append(time.thread_time() - mark[0])
                stop(self)

            module.Classifier.on_train_epoch_start, module.Classifier.on_validation_start = timed_start, timed_stop
            train(cfg)
        else:
            from cnnlab.data.batches import TrainBatches, normalize
            from cnnlab.data.preprocess import load_arrays
            from cnnlab.models import build_network

            raw = load_arrays(arrays)
            x, y = normalize(torch.from_numpy(raw["x_train"]), None, None), torch.from_numpy(raw["y_train"]).long()
            net = build_network(cfg.model)
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            batches = TrainBatches(x, y, BATCH, 0, cfg.augment, IMAGES, False)
            for epoch in range(EPOCHS):
                batches.set_epoch(epoch)
                t = time.thread_time()
                train_epoch(net, opt, batches, precision == "bf16-mixed")
                seconds.append(time.thread_time() - t)
    return min(seconds[1:]) / (IMAGES // BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per side and precision")
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--side", choices=["pipeline", "bare"], help="measure one side in this process")
    parser.add_argument("--precision", default="32-true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    arrays = prepared_arrays(args)
    if args.side:
        print(round(one_side(args.side, args.precision, arrays)))
        return
    for precision in args.precisions.split(","):
        us = {"pipeline": [], "bare": []}
        for r in range(args.rounds):
            for side in ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare"):
                cmd = [sys.executable, "-m", "bench.step_cpu_time", "--side", side, "--precision", precision,
                       "--archive", args.archive, "--md5", args.md5, "--workdir", args.workdir]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
                us[side].append(float(out.strip().splitlines()[-1]))
        pipe, bare = statistics.median(us["pipeline"]), statistics.median(us["bare"])
        print(f"{precision}: pipeline {pipe:,.0f} us/step {us['pipeline']}, bare loop {bare:,.0f} us/step "
              f"{us['bare']}; the pipeline adds {pipe - bare:,.0f} us of CPU time a step", flush=True)


if __name__ == "__main__":
    main()
