"""How long a study's training jobs will take on this machine, from throughput measured on the spot.

Before jobs start, the workflow times a few training steps of each distinct network the jobs
train (random images, one thread per job as the jobs use, or the GPU; at least PROBE_ROUND_S
each), then adds up epochs x images per job and divides by the jobs that run at once, and adds
the report, whose network evaluations grow with the networks and images it tests. It is an
estimate: validation, testing and start-up are counted with fixed allowances measured on whole
studies (docs/benchmarks.md, the estimate against the wall time), and other load on the machine
is not.

On a CPU with native bf16 it first times each family's full-data baseline network at fp32 and under
bf16 autocast, alternating, which decides the family's precision under `trainer.precision=auto`
(cnnlab.study.precision); the workflow hands the measured speed-ups to its jobs. The baseline, not
whichever job Snakemake lists first: an Adam or batch-norm variant gains less from bf16, and the
choice must not change with the jobs left to run.

The workflow also orders its training jobs by their work in FLOPs (training_work), the longest
first: counted, not timed, since Snakemake sets priorities before anything runs.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.models import build_network, family_of
from cnnlab.optim.optimizers import build_optimizer
from cnnlab.study.precision import PrecisionChoice, choose

# Per job, beyond its images at the probed rate: start-up, the batches of validation and the train
# probe beyond what EVAL_COST counts, the test, artifacts and closing the run. Fitted so that the
# estimate matches the measured wall time of whole studies (docs/benchmarks.md, bench.study_cost).
JOB_OVERHEAD_S = 10.5
# The report: a fixed part, and its shift and zoom tests, per network and test image they run on.
REPORT_BASE_S = 15.0
REPORT_S_PER_IMAGE = 0.0045
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)
LONG_ON_CPU_S = 2 * 3600  # beyond this, a CPU-only user is pointed at the smaller studies
# Each round of the bf16 probe times at least this long per precision: a small network's few steps
# last milliseconds, where one interruption by other work on the machine moves the ratio by half.
PROBE_ROUND_S = 0.25


@dataclass(frozen=True)
class Job:
    study: str
    variant: str
    cfg: object  # the composed config


class TimedSteps:
    """Training steps of cfg's network and optimizer on one random batch at its batch size, as training
    runs them (memory format; bf16 autocast where asked)."""

    def __init__(self, cfg, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        self.net = build_network(cfg.model).to(device)
        self.opt = build_optimizer(cfg.optimizer, self.net.parameters())
        b = self.batch = cfg.trainer.batch_size
        self.x, self.y = torch.randn(b, 3, 32, 32, device=device), torch.randint(0, 10, (b,), device=device)
        if self.net.trains_channels_last(cfg.trainer.channels_last):
            self.net = self.net.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)

    def images_per_second(self, steps: int, bf16: bool = False, min_seconds: float = 0.0) -> float:
        """Images/s over at least `steps` steps and `min_seconds`, after one warm-up step."""
        self._step(bf16)
        self._sync()
        start, done = time.perf_counter(), 0
        while done < steps or time.perf_counter() - start < min_seconds:
            self._step(bf16)
            done += 1
            if done >= steps:
                self._sync()
        self._sync()
        return done * self.batch / (time.perf_counter() - start)

    def _step(self, bf16: bool) -> None:
        # Lightning's bf16-mixed: the forward pass and the loss under autocast, backward outside.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(self.net(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def images_per_second(cfg, device: torch.device, bf16: bool = False, steps: int = 3,
                      min_seconds: float = PROBE_ROUND_S) -> float:
    """Training images/s of cfg's network and optimizer at its batch size, after one warm-up step."""
    with torch.random.fork_rng(devices=[]):  # the caller's random numbers are as they were
        return TimedSteps(cfg, device).images_per_second(steps, bf16, min_seconds=min_seconds)


def bf16_speedup(cfg, device: torch.device, rounds: int = 3, steps: int = 2,
                 min_seconds: float = PROBE_ROUND_S) -> float:
    """bf16 autocast's training images/s over fp32's for cfg's network: the fastest of `rounds`
    alternating rounds of each (each at least `steps` steps and `min_seconds`), so that a burst of
    other load on the machine moves both alike."""
    fp32, bf16 = [], []
    with torch.random.fork_rng(devices=[]):  # a job measures itself between seeding and training
        timed = TimedSteps(cfg, device)
        for _ in range(rounds):
            fp32.append(timed.images_per_second(steps, min_seconds=min_seconds))
            bf16.append(timed.images_per_second(steps, bf16=True, min_seconds=min_seconds))
    return max(bf16) / max(fp32)


def trained_images(cfg, n_train: int, n_eval: int) -> float:
    """The images a run trains on, over all its epochs, evaluated ones counted at EVAL_COST each."""
    n_train = min(cfg.data.train_subset or n_train, n_train)  # a data-limited regime trains on its subset
    per_epoch = min(cfg.data.train_images or n_train, n_train)
    probe = min(cfg.data.train_probe_images, n_train)
    validations = cfg.trainer.max_epochs // cfg.trainer.check_val_every_n_epoch
    return cfg.trainer.max_epochs * per_epoch + validations * EVAL_COST * (n_eval + probe)


def job_seconds(cfg, rate: float, n_train: int, n_eval: int) -> float:
    return trained_images(cfg, n_train, n_eval) / rate + JOB_OVERHEAD_S


@functools.cache
def _forward_flops(model_yaml: str) -> int:
    net = build_network(OmegaConf.create(model_yaml)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def forward_flops(model_cfg) -> int:
    """One image's forward pass through the network, in FLOPs of its convolutions and matrix products
    (torch's FlopCounterMode), counted on a network built from the config (no training)."""
    return _forward_flops(OmegaConf.to_yaml(model_cfg, resolve=True))


def training_work(cfg, n_train: int, n_eval: int) -> float:
    """A run's work, in forward-pass GFLOPs: what the workflow orders its jobs by, the longest first.
    Counted before any job runs, not timed, it ranks jobs rather than predicting seconds (a CNN's
    FLOP runs slower than an MLP's on a CPU)."""
    return trained_images(cfg, n_train, n_eval) * forward_flops(cfg.model) / 1e9


def precision_choices(jobs: list[Job], device: torch.device, probes: list[Job] = ()) -> dict[str, PrecisionChoice]:
    """The precision under `auto` (cnnlab.study.precision.choose) of each family with a job at `auto`,
    measured where the CPU has native bf16 on the family's first network in `probes` (its full-data
    baseline), else on its first job's."""
    accelerator = "auto" if device.type == "cuda" else "cpu"
    auto = {family_of(job.cfg.model) for job in jobs if job.cfg.trainer.precision == "auto"}
    choices: dict[str, PrecisionChoice] = {}
    for job in [*probes, *jobs]:
        family = family_of(job.cfg.model)
        if family in auto and family not in choices:
            choices[family] = choose("auto", accelerator, family, measure=lambda cfg=job.cfg: bf16_speedup(cfg, device),
                                     measured_where="at the workflow's start")
    return choices


def estimate(jobs: list[Job], slots: int, device: torch.device, n_train: int, n_eval: int,
             probes: list[Job] = ()) -> dict:
    """{'seconds': wall time, 'rates': family -> images/s of its first network, 'precision': family ->
    PrecisionChoice under `auto` (families with a job at `auto`), 'settings': family -> the explicit
    trainer.precision values of its other jobs}, jobs spread over slots; probes: precision_choices'."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each CPU job trains
    settings: dict[str, set[str]] = {}
    try:
        auto = precision_choices(jobs, device, probes)
        rates: dict[str, float] = {}
        by_family: dict[str, float] = {}
        total = longest = 0.0
        for job in jobs:
            family = family_of(job.cfg.model)
            setting = job.cfg.trainer.precision
            if setting != "auto":
                settings.setdefault(family, set()).add(setting)
            bf16 = (auto[family].precision if setting == "auto" else setting) == "bf16-mixed"
            key = json.dumps([repr(job.cfg.model), repr(job.cfg.optimizer), job.cfg.trainer.batch_size, bf16])
            if key not in rates:
                rates[key] = images_per_second(job.cfg, device, bf16=bf16)
                by_family.setdefault(family, rates[key])
            seconds = job_seconds(job.cfg, rates[key], n_train, n_eval)
            total += seconds
            longest = max(longest, seconds)
    finally:
        torch.set_num_threads(threads)
    wall = max(total / max(1, min(slots, len(jobs))), longest) if jobs else 0.0
    return {"seconds": wall, "rates": by_family, "precision": auto, "settings": settings}


def report_seconds(study) -> float:
    """The report's time: a fixed part, plus its shift and zoom tests of every seed of the networks it
    compares (report.sensitivity) on report.sensitivity_images test images each."""
    names = [v for v in study.report.get("sensitivity", []) if v in study.variants]
    networks = sum(len(study.seeds_of(v)) for v in names)
    return REPORT_BASE_S + REPORT_S_PER_IMAGE * networks * int(study.report.get("sensitivity_images", 2000))


def write_estimate(path, result: dict, pending: list, slots: int) -> None:
    """The estimate as the workflow printed it, kept beside the study's results (bench.study_cost compares
    it with the measured wall time)."""
    from cnnlab.atomic import write_text

    write_text(path, json.dumps({
        "estimated_seconds": round(result["seconds"], 1), "jobs": len(pending), "slots": slots,
        "rates": {f: round(r, 1) for f, r in result["rates"].items()},
        "studies": sorted({s for s, _, _ in pending}), "written": time.time(),
    }, indent=2) + "\n")


def bf16_speedups(result: dict) -> dict[str, float]:
    """family -> measured bf16 speed-up, from an estimate: what the workflow hands its jobs."""
    return {f: c.bf16_speedup for f, c in result["precision"].items() if c.bf16_speedup is not None}


def duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def announce(pending: list[tuple[str, str, int]], conf_dir, slots: int, gpus: int, n_train: int, n_eval: int,
             smaller: tuple[str, ...] = ("quick", "cpu"), say=print, configs: dict | None = None) -> dict:
    """Say how many training jobs are about to run and for about how long; point a CPU-only user who
    is about to start a many-hour run at the smaller studies (with their own estimates).

    configs: (study, variant) -> composed config, those the caller has already composed (the
    workflow has every variant's); the others are composed here, each once, not once per seed."""
    from cnnlab.study.studies import compose_config, load_study

    device = torch.device("cuda" if gpus and torch.cuda.is_available() else "cpu")
    composed = dict(configs or {})

    def compose(study: str, variant: str):
        if (study, variant) not in composed:
            composed[study, variant] = compose_config(study=study, variant=variant, conf_dir=conf_dir)
        return composed[study, variant]

    jobs = [Job(s, v, compose(s, v)) for s, v, _ in pending]
    probes = [Job(s, v, compose(s, v)) for s in sorted({s for s, _, _ in pending})
              for v in full_data_baselines(load_study(s, conf_dir))]
    result = estimate(jobs, slots, device, n_train, n_eval, probes)
    # Training jobs to run mean the report is built again: the last study's (the tuning study comes first).
    reported = [s for s in dict.fromkeys(s for s, _, _ in pending) if not load_study(s, conf_dir).is_sweep]
    result["seconds"] += sum(report_seconds(load_study(s, conf_dir)) for s in reported)
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
            names = [name, *([study.tuning_study] if study.tuning_study else [])]
            all_jobs = [Job(s, v, compose(s, v)) for s in names for v, _ in load_study(s, conf_dir).jobs()]
            seconds = estimate(all_jobs, slots, device, n_train, n_eval)["seconds"]
            options.append(f"--config study={name} (about {duration(seconds)})")
        say(f"cnnlab: that is more than {LONG_ON_CPU_S // 3600} hours without a GPU; for results on this machine "
            f"stop now (Ctrl-C) and run snakemake --cores all {' or '.join(options)}.")
    for family, choice in result["precision"].items():
        say(f"cnnlab: {family} trains in {choice.describe()} where trainer.precision=auto.")
    for family, settings in result["settings"].items():
        for setting in sorted(settings):
            say(f"cnnlab: {family} trains in {setting} where trainer.precision={setting}.")
    return result


def full_data_baselines(study) -> list[str]:
    """The study's baseline variants of its full-data regime: the networks the bf16 probe measures."""
    from cnnlab.study.studies import FULL

    return [v.name for v in study.variants.values() if v.baseline and study.regime_of(v.name).name == FULL]


def main(argv: list[str] | None = None) -> int:
    """`python -m cnnlab.study.estimate --study cpu`: the estimate a fresh folder's workflow would
    print for the whole study, its tuning study included, without running anything."""
    import argparse
    import os

    from cnnlab.study.studies import load_study

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--conf-dir", default="conf", help="the checkout's conf/ folder")
    ap.add_argument("--slots", type=int, default=os.cpu_count(), help="jobs at once (snakemake --cores)")
    ap.add_argument("--train-images", type=int, default=45000, help="workflow/config.yaml: train_records - val_size")
    ap.add_argument("--val-images", type=int, default=5000, help="workflow/config.yaml: val_size")
    args = ap.parse_args(argv)
    study = load_study(args.study, args.conf_dir)
    names = [*([study.tuning_study] if study.tuning_study else []), args.study]
    pending = [(name, variant, seed) for name in names for variant, seed in load_study(name, args.conf_dir).jobs()]
    gpus = torch.cuda.device_count()
    announce(pending, args.conf_dir, gpus or args.slots, gpus, args.train_images, args.val_images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
