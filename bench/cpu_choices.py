"""Which CPU settings pay off on this machine: threads per job, concurrent jobs, channels-last,
batch size, torch.compile. Each measured as training images/s of the lecture's CNN and MLP.

    python -m bench.cpu_choices [--images 5000 --epochs 3 --repeats 3]

Every setting runs in its own fresh processes over the same in-memory data, with the same step as
bench/train_throughput.py's bare loop (which matches the pipeline's step to within a few percent).
Each job builds its network and trains one warm-up epoch, then waits; when every job of the
setting is ready they are released together, and the figure is all their timed images divided by
one shared wall-clock window, from the release to the end of the last job. The settings take
turns, --repeats rounds, so a drift in the machine's other load touches all of them; each line
gives the median and every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bench.common import REPO, data_args, prepared_arrays, timed_epochs
from bench.loader import cpu_name
from cnnlab.data.batches import TrainBatches, normalize
from cnnlab.data.preprocess import load_arrays
from cnnlab.models import build_network
from cnnlab.study.studies import compose_config


def measure(args) -> None:
    """One job: set up, one warm-up epoch, say ready, wait for the go, then time --epochs - 1 epochs."""
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
    timed_epochs(step_net, opt, batches, 1)  # warm-up (and compilation), not timed
    print("ready", flush=True)
    sys.stdin.readline()  # the go: every job of this setting starts its timed epochs together
    start = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes on the machine
    timed_epochs(step_net, opt, batches, args.epochs - 1)
    print(json.dumps({"images": args.images * (args.epochs - 1), "start": start, "end": time.monotonic()}))


def run(args, family, threads=1, batch=128, channels_last=False, compile=False, concurrent=1) -> float:
    """Images/s of `concurrent` jobs together: all their timed images over one shared window."""
    cmd = [sys.executable, "-m", "bench.cpu_choices", "--one", "--family", family, "--threads", str(threads),
           "--batch", str(batch), "--images", str(args.images), "--epochs", str(args.epochs), "--workdir", args.workdir,
           "--archive", args.archive, "--md5", args.md5]
    cmd += ["--channels-last"] * channels_last + ["--compile"] * compile
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
             for _ in range(concurrent)]
    for p in procs:
        if not any(line.strip() == "ready" for line in p.stdout):  # stops reading at "ready"
            raise RuntimeError(f"a {family} job failed before its timed epochs (exit {p.wait()})")
    released = time.monotonic()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    jobs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    # One window for all: from the release, before any job's first timed step, to the last job's end.
    assert all(j["start"] >= released for j in jobs)
    return sum(j["images"] for j in jobs) / (max(j["end"] for j in jobs) - released)


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
    p.add_argument("--repeats", type=int, default=3, help="rounds over all settings, taking turns")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the first is a warm-up")
    if args.one:
        measure(args)
        return
    prepared_arrays(args)
    settings = [
        (family, label, kw)
        for family in ("cnn", "mlp")
        for label, kw in (
            ("1 job, 1 thread", {}),
            ("1 job, 2 threads", {"threads": 2}),
            ("2 concurrent jobs, 1 thread each", {"concurrent": 2}),
            ("1 job, 1 thread, batch 256", {"batch": 256}),
            ("1 job, 1 thread, channels-last", {"channels_last": True}),
            ("1 job, 1 thread, torch.compile", {"compile": True}),
        )
        if not (family == "mlp" and kw.get("channels_last"))  # no convolutions: nothing to lay out
    ]
    print(f"{args.images} images/epoch per job, {args.epochs} epochs (first is warm-up), {args.repeats} rounds; "
          f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    samples: dict[tuple[str, str], list[float]] = {(f, label): [] for f, label, _ in settings}
    for r in range(args.repeats):
        for family, label, kw in settings:
            rate = run(args, family, **kw)
            samples[family, label].append(rate)
            print(f"round {r + 1}: {family}: {label:<36} {rate:>9,.0f}", flush=True)
    print(f"images/s, all jobs of a setting together over one shared window; median [every round]; "
          f"load average {os.getloadavg()[0]:.1f}")
    for (family, label), rates in samples.items():
        print(f"{family}: {label:<36} {statistics.median(rates):>9,.0f}  [{', '.join(f'{v:,.0f}' for v in rates)}]")


if __name__ == "__main__":
    main()
