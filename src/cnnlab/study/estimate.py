"""How long a study's training jobs will take on this machine, from throughput measured on the spot.

Before jobs start, the workflow times a few training steps of each distinct network the jobs
train (random images, one thread per job as the jobs use, or the GPU), then adds up epochs x
images per job and divides by the jobs that run at once. It is an estimate: validation, testing
and start-up are counted with fixed allowances, and other load on the machine is not.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.models import build_network, family_of
from cnnlab.optim.optimizers import build_optimizer

JOB_OVERHEAD_S = 12.0  # start-up, test and artifacts per job (bench/job_overhead.py measures it)
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)
LONG_ON_CPU_S = 2 * 3600  # beyond this, a CPU-only user is pointed at the smaller studies


@dataclass(frozen=True)
class Job:
    study: str
    variant: str
    cfg: object  # the composed config


def images_per_second(cfg, device: torch.device, steps: int = 3) -> float:
    """Training images/s of cfg's network and optimizer at its batch size, after one warm-up step."""
    torch.manual_seed(0)
    net = build_network(cfg.model).to(device)
    opt = build_optimizer(cfg.optimizer, net.parameters())
    b = cfg.trainer.batch_size
    x, y = torch.randn(b, 3, 32, 32, device=device), torch.randint(0, 10, (b,), device=device)
    if net.trains_channels_last(cfg.trainer.channels_last):  # as training will run it
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * b / (time.perf_counter() - start)


def job_seconds(cfg, rate: float, n_train: int, n_eval: int) -> float:
    epochs = cfg.trainer.max_epochs
    n_train = min(cfg.data.train_subset or n_train, n_train)  # a data-limited regime trains on its subset
    per_epoch = min(cfg.data.train_images or n_train, n_train)
    probe = min(cfg.data.train_probe_images, n_train)
    return epochs * (per_epoch + EVAL_COST * (n_eval + probe)) / rate + JOB_OVERHEAD_S


def estimate(jobs: list[Job], slots: int, device: torch.device, n_train: int, n_eval: int) -> dict:
    """{'seconds': wall time, 'rates': family -> images/s of its first network}, jobs spread over slots."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each CPU job trains
    try:
        rates: dict[str, float] = {}
        by_family: dict[str, float] = {}
        total = longest = 0.0
        for job in jobs:
            key = json.dumps([repr(job.cfg.model), repr(job.cfg.optimizer), job.cfg.trainer.batch_size])
            if key not in rates:
                rates[key] = images_per_second(job.cfg, device)
                by_family.setdefault(family_of(job.cfg.model), rates[key])
            seconds = job_seconds(job.cfg, rates[key], n_train, n_eval)
            total += seconds
            longest = max(longest, seconds)
    finally:
        torch.set_num_threads(threads)
    wall = max(total / max(1, min(slots, len(jobs))), longest) if jobs else 0.0
    return {"seconds": wall, "rates": by_family}


def duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def announce(pending: list[tuple[str, str, int]], conf_dir, slots: int, gpus: int, n_train: int, n_eval: int,
             smaller: tuple[str, ...] = ("quick", "cpu"), say=print) -> dict:
    """Say how many training jobs are about to run and for about how long; point a CPU-only user who
    is about to start a many-hour run at the smaller studies (with their own estimates)."""
    from cnnlab.study.studies import compose_config, load_study

    device = torch.device("cuda" if gpus and torch.cuda.is_available() else "cpu")
    compose = lambda s, v: compose_config(study=s, variant=v, conf_dir=conf_dir)  # noqa: E731
    jobs = [Job(s, v, compose(s, v)) for s, v, _ in pending]
    result = estimate(jobs, slots, device, n_train, n_eval)
    where = f"{slots} at a time on {'GPU' if device.type == 'cuda' else 'CPU'}"
    rates = ", ".join(f"{f} {r:,.0f}" for f, r in result["rates"].items())
    studies = ", ".join(dict.fromkeys(s for s, _, _ in pending))
    jobs_said = f"{len(pending)} training job{'s' if len(pending) != 1 else ''}"
    say(f"cnnlab: {jobs_said} to run ({studies}); estimated wall time on this machine "
        f"{duration(result['seconds'])} ({where}; measured training images/s per job: {rates}).")
    if device.type == "cpu" and result["seconds"] > LONG_ON_CPU_S:
        options = []
        for name in smaller:
            study = load_study(name, conf_dir)
            names = [name, *([study.tune_lr] if study.tune_lr else [])]
            all_jobs = [Job(s, v, compose(s, v)) for s in names for v, _ in load_study(s, conf_dir).jobs()]
            seconds = estimate(all_jobs, slots, device, n_train, n_eval)["seconds"]
            options.append(f"--config study={name} (about {duration(seconds)})")
        say(f"cnnlab: that is more than {LONG_ON_CPU_S // 3600} hours without a GPU; for results on this machine "
            f"stop now (Ctrl-C) and run snakemake --cores all {' or '.join(options)}.")
    return result
