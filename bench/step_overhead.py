"""Microseconds per optimizer step that the training framework adds, with a network too small to hide it.

    python -m bench.step_overhead [--steps 2000 --rounds 3]

A 16-input linear layer on batches of 8: the step's own compute is ~100 us, so the rest is
bookkeeping. Three ways to run the same steps (each in a fresh process, alternating):
  bare       a hand-written loop
  automatic  a LightningModule returning the loss, Lightning's defaults
  cnnlab     the same module with what cnnlab's Trainer adds: its NoProfiler
Printed: the median over processes of each one's fastest epoch, in us per step.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench.common import REPO, timed_epochs

MODES = ("bare", "automatic", "cnnlab")


class Repeat:
    """The same (x, y) batch `steps` times: the loader costs nothing."""

    def __init__(self, steps: int):
        self.x, self.y, self.steps = torch.randn(8, 16), torch.randint(0, 2, (8,)), steps
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.x, self.y


def one_mode(mode: str, steps: int, epochs: int = 4) -> float:
    import pytorch_lightning as pl

    from cnnlab.training.trainer import NoProfiler

    torch.manual_seed(0)
    seconds: list[float] = []
    if mode == "bare":
        net = torch.nn.Linear(16, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        return min(timed_epochs(net, opt, Repeat(steps), epochs)) / steps * 1e6

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(16, 2)

        def training_step(self, batch, idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def on_train_epoch_start(self):
            self.start = time.perf_counter()

        def on_train_epoch_end(self):
            seconds.append(time.perf_counter() - self.start)

    loader = Repeat(steps)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu",
                         profiler=NoProfiler() if mode == "cnnlab" else None)
    trainer.fit(Module(), train_dataloaders=loader)
    return min(seconds) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per epoch")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.mode:
        logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
        print(one_mode(args.mode, args.steps))
        return
    results: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES if r % 2 == 0 else reversed(MODES):
            cmd = [sys.executable, "-m", "bench.step_overhead", "--mode", mode, "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
            results[mode].append(float(out.strip().splitlines()[-1]))
    bare = statistics.median(results["bare"])
    for mode in MODES:
        us = statistics.median(results[mode])
        print(f"{mode:10s} {us:7.0f} us/step {[round(v) for v in results[mode]]}  framework adds {us - bare:5.0f} us")


if __name__ == "__main__":
    main()
