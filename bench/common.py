"""Shared by the benchmarks: the prepared full CIFAR-10 arrays, made once from the local mirror."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data.download import fetch_archive
from cnnlab.data.preprocess import prepare

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data" / "cifar10" / "cifar-10-binary.tar.gz"
MIRROR_MD5 = "e7e97d82bba59a97f7458a4485924275"


def data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", default=str(MIRROR), help="CIFAR-10 binary archive (default: the local mirror)")
    parser.add_argument("--md5", default=MIRROR_MD5, help="its MD5")
    parser.add_argument("--workdir", default="/tmp/cnnlab-bench", help="where prepared arrays and runs go")


def prepared_arrays(args) -> Path:
    """results/data/cifar10.npz under the work dir, prepared from the archive if not there yet."""
    work = Path(args.workdir)
    arrays = work / "results" / "data" / "cifar10.npz"
    if not arrays.is_file():
        archive = fetch_archive(args.archive, args.md5, work / "resources" / "cifar-10-binary.tar.gz")
        prepare(archive, arrays, arrays.with_suffix(".json"), args.md5)
    return arrays


def train_epoch(net, opt, batches, bf16: bool = False) -> None:
    """One epoch of the plain step (forward, cross-entropy, backward, optimizer step); bf16: the forward
    pass and the loss under bf16 autocast, as Lightning's bf16-mixed runs them."""
    for xb, yb in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed_epochs(net, opt, batches, epochs: int) -> list[float]:
    """Seconds per epoch of the plain step, training only."""
    seconds = []
    net.train()
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        start = time.perf_counter()
        train_epoch(net, opt, batches)
        seconds.append(time.perf_counter() - start)
    return seconds
