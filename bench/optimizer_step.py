"""Training steps per second of the cpu study's networks under Adam, fused and unfused.

    python -m bench.optimizer_step [--steps 60 --rounds 3]

One thread, bf16-mixed autocast as the cpu study trains, batch 128 of random images; each round
times both updates on fresh networks, unfused first. Prints images/s per family, update and round.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cnnlab.models.cnn import CNN
from cnnlab.models.mlp import MLP

FAMILIES = {"mlp": MLP, "cnn": lambda: CNN(channels=(16, 32, 64))}


def images_per_second(net, fused: bool, steps: int, batch: int = 128, warmup: int = 5) -> float:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if isinstance(net, CNN):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for family, make in FAMILIES.items():
        for r in range(args.rounds):
            plain = images_per_second(make(), False, args.steps)
            fused = images_per_second(make(), True, args.steps)
            print(f"{family} round {r}: unfused {plain:,.0f} images/s, fused {fused:,.0f} images/s")


if __name__ == "__main__":
    main()
