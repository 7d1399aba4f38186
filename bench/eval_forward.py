"""Evaluation images/s of the cpu study's networks on one CPU thread, by batch size and pooling.

    python -m bench.eval_forward [--images 10000 --repeats 3]

Forward passes in inference mode over the prepared test split (channels-last for the CNNs, as
the pipeline runs them), for the cpu study's plain, batch-normalised and global-average-head CNNs
and its MLP, at evaluation batches of 1,000 and 250. For the CNNs also with torch's own
`nn.MaxPool2d` in place of cnnlab's (which takes the maximum of shifted views when no gradient is
wanted). Each line gives the median images/s over --repeats rounds (the settings take turns, so
a drift in the machine's load touches all of them), and whether every image's logits were equal
to the last bit to those of the first setting of that network. Networks are freshly initialised
(seed 0): speed does not depend on the weights' values, and bit equality holds for any.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from bench.common import data_args, prepared_arrays
from bench.loader import cpu_name
from cnnlab.data.batches import normalize
from cnnlab.data.preprocess import load_arrays
from cnnlab.models import build_network
from cnnlab.models.pooling import MaxPool2d
from cnnlab.study.studies import compose_config

VARIANTS = ("cnn_baseline", "cnn_batchnorm", "cnn_gap", "mlp_baseline")


def logits(net, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)])
    return out, time.perf_counter() - start


def settings(variant: str) -> list[tuple[int, bool]]:
    """(batch size, views pooling) pairs measured for a variant; the first is the reference."""
    if variant.startswith("mlp"):
        return [(1000, True), (250, True)]
    return [(1000, False), (250, False), (1000, True), (250, True)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(p)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    raw = load_arrays(prepared_arrays(args))
    x = normalize(torch.from_numpy(raw["x_test"][: args.images]), None, None)
    print(f"{cpu_name()}, 1 thread, {len(x)} test images, load average {os.getloadavg()[0]:.1f}")
    nets = {}
    for variant in VARIANTS:
        cfg = compose_config([], "cpu", variant, 0)
        torch.manual_seed(0)
        net = build_network(cfg.model, num_classes=10).eval()
        cl = net.trains_channels_last("auto")
        nets[variant] = (net.to(memory_format=torch.channels_last) if cl else net, cl)
    speeds: dict[tuple[str, int, bool], list[float]] = {}
    equal: dict[tuple[str, int, bool], bool] = {}
    for _ in range(args.repeats):
        for variant, (net, cl) in nets.items():
            data = x.contiguous(memory_format=torch.channels_last) if cl else x
            pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
            reference = None
            for batch, views in settings(variant):
                for m in pools:
                    m.__class__ = MaxPool2d if views else nn.MaxPool2d
                out, seconds = logits(net, data, batch)
                bits = out.view(torch.int32)
                reference = bits if reference is None else reference
                key = (variant, batch, views)
                speeds.setdefault(key, []).append(len(x) / seconds)
                equal[key] = equal.get(key, True) and torch.equal(bits, reference)
    print(f"{'network':<14} {'batch':>5} {'pooling':<18} {'images/s (median)':>17}  logits equal to the first line")
    for (variant, batch, views), samples in speeds.items():
        pooling = "-" if variant.startswith("mlp") else ("cnnlab (views)" if views else "nn.MaxPool2d")
        print(f"{variant:<14} {batch:>5} {pooling:<18} {statistics.median(samples):>17,.0f}  "
              f"{'yes' if equal[(variant, batch, views)] else 'NO'}")


if __name__ == "__main__":
    main()
