"""Which CPU settings pay off on this machine: threads per job, concurrent jobs, channels-last,
batch size, torch.compile. Each measured as training images/s of the lecture's CNN and MLP.

    python -m bench.cpu_choices [--images 5000 --epochs 3]

Every setting runs in its own fresh process over the same in-memory data, with the same step as
bench/train_throughput.py's bare loop (which matches the pipeline's step to within a few percent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from bench.common import REPO, data_args, prepared_arrays, timed_epochs
from cnnlab.batches import TrainBatches, normalize
from cnnlab.models import build_network
from cnnlab.preprocess import load_arrays
from cnnlab.study import compose_config


def measure(args) -> float:
    torch.set_num_threads(args.threads)
    cfg = compose_config([f"trainer.batch_size={args.batch}", "augment=shift_flip", f"data.train_images={args.images}"],
                         study="lecture", variant=f"{args.family}_baseline", seed=0)
    raw = load_arrays(prepared_arrays(args))
    x = normalize(torch.from_numpy(raw["x_train"]), None, None)
    y = torch.from_numpy(raw["y_train"]).long()
    torch.manual_seed(0)
    net = build_network(cfg.model)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    batches = TrainBatches(x, y, args.batch, 0, cfg.augment, args.images, channels_last=args.channels_last)
    seconds = timed_epochs(step_net, opt, batches, args.epochs)
    return args.images * (len(seconds) - 1) / sum(seconds[1:])


def run(args, family, threads=1, batch=128, channels_last=False, compile=False, concurrent=1) -> float:
    cmd = [sys.executable, "-m", "bench.cpu_choices", "--one", "--family", family, "--threads", str(threads),
           "--batch", str(batch), "--images", str(args.images), "--epochs", str(args.epochs), "--workdir", args.workdir,
           "--archive", args.archive, "--md5", args.md5]
    cmd += ["--channels-last"] * channels_last + ["--compile"] * compile
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env) for _ in range(concurrent)]
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(rates)  # images/s of all concurrent jobs together


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(p)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--family", default="cnn", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    prepared_arrays(args)
    print(f"{args.images} images/epoch, {args.epochs} epochs (first is warm-up); images/s, all jobs together")
    for family in ("cnn", "mlp"):
        rows = [
            ("1 job, 1 thread", {}),
            ("1 job, 2 threads", {"threads": 2}),
            ("2 concurrent jobs, 1 thread each", {"concurrent": 2}),
            ("1 job, 1 thread, batch 256", {"batch": 256}),
            ("1 job, 1 thread, channels-last", {"channels_last": True}),
            ("1 job, 1 thread, torch.compile", {"compile": True}),
        ]
        for label, kw in rows:
            if family == "mlp" and kw.get("channels_last"):
                continue
            print(f"{family}: {label:<36} {run(args, family, **kw):>9,.0f}", flush=True)


if __name__ == "__main__":
    main()
