"""The numeric precision a run trains in: `trainer.precision`, and what `auto` means on this machine.

    trainer.precision=auto        # the default: chosen by `choose` below
    trainer.precision=32-true     # or bf16-mixed, 16-mixed, 64-true (Lightning's names): as written

`auto` on a GPU is bf16-mixed where the GPU supports bf16, 32-true otherwise. `auto` on the CPU is
bf16-mixed where the CPU has native bf16 arithmetic (the `amx_bf16` or `avx512_bf16` flag) and bf16
autocast trains the run's network family at least MIN_BF16_SPEEDUP times as fast as fp32; 32-true
otherwise. The speed-up is measured, one thread, by the workflow as it starts (each family's full-data
baseline network, cnnlab.study.estimate) and handed to its jobs in CNNLAB_BF16_SPEEDUP, so that every
run of a family trains alike; a job started by hand without it measures its own network (a few seconds).
`choose` is the one place that looks at the device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo, lscpu) of native bf16 arithmetic: Intel's AMX tiles (Sapphire
# Rapids on), AVX-512 BF16 (Cooper Lake, AMD Zen 4 on). Without them oneDNN emulates bf16, slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 must be this much faster than fp32 (training images/s) to be chosen: a smaller gain is within a
# short probe's noise on a shared machine, and not worth the rounding.
MIN_BF16_SPEEDUP = 1.1
# JSON {family: bf16 images/s over fp32 images/s}, measured by the workflow as it starts.
SPEEDUP_VARIABLE = "CNNLAB_BF16_SPEEDUP"
# The CPU's flags, space-separated, in place of /proc/cpuinfo's (tests; "" to keep a CPU in fp32).
CPU_FLAGS_VARIABLE = "CNNLAB_CPU_FLAGS"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # Lightning's name
    chosen_by: str  # what decided it, in words
    bf16_speedup: float | None = None  # bf16 over fp32 training images/s, where measured

    def params(self) -> dict[str, str]:
        """The run's MLflow params."""
        speedup = "not measured" if self.bf16_speedup is None else f"{self.bf16_speedup:.2f}"
        return {"precision_resolved": self.precision, "precision_bf16_speedup": speedup,
                "precision_chosen_by": self.chosen_by}

    def describe(self) -> str:
        speedup = "" if self.bf16_speedup is None else f": {self.bf16_speedup:.2f}x fp32's images/s"
        return f"{self.precision} ({self.chosen_by}{speedup})"

    def to_json(self) -> str:
        return json.dumps({"precision": self.precision, "chosen_by": self.chosen_by,
                           "bf16_speedup": self.bf16_speedup})

    @classmethod
    def from_json(cls, text: str) -> PrecisionChoice:
        d = json.loads(text)
        return cls(d["precision"], d["chosen_by"], d.get("bf16_speedup"))


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (CNNLAB_CPU_FLAGS where set); none where /proc/cpuinfo is missing."""
    if CPU_FLAGS_VARIABLE in os.environ:
        return set(os.environ[CPU_FLAGS_VARIABLE].split())
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_cpu_bf16(flags: set[str]) -> str | None:
    """The first flag of native bf16 arithmetic the CPU has, or None."""
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def handed_speedup(family: str) -> float | None:
    """The workflow's measured bf16 speed-up for the family, if it handed one to this job."""
    try:
        return float(json.loads(os.environ.get(SPEEDUP_VARIABLE) or "{}")[family])
    except (KeyError, TypeError, ValueError):
        return None


def gpu_bf16(accelerator: str) -> bool | None:
    """Whether the run's GPU supports bf16; None where the run trains on the CPU."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return None


def choose(setting: str, accelerator: str, family: str, measure: Callable[[], float] | None = None,
           measured_where: str = "in this job", flags: set[str] | None = None,
           gpu: bool | None | str = "detect") -> PrecisionChoice:
    """The precision a run of `family` trains in under `trainer.precision=setting`.

    measure() gives bf16's speed-up for the family's network; it is called only on a CPU with native
    bf16 when the workflow handed none (None: nothing is measured and the CPU trains in fp32).
    flags (the CPU's) and gpu (as gpu_bf16 answers) are looked up unless given.
    """
    if setting != "auto":
        return PrecisionChoice(setting, "the setting")
    gpu = gpu_bf16(accelerator) if gpu == "detect" else gpu
    if gpu is not None:
        return PrecisionChoice("bf16-mixed" if gpu else "32-true", f"GPU {'with' if gpu else 'without'} bf16")
    flag = native_cpu_bf16(cpu_flags() if flags is None else flags)
    if flag is None:
        return PrecisionChoice("32-true", "CPU without native bf16")
    speedup, where = handed_speedup(family), "at the workflow's start"
    if speedup is None and measure is not None:
        speedup, where = measure(), measured_where
    if speedup is None:
        return PrecisionChoice("32-true", f"CPU with {flag}, bf16 speed not measured")
    faster = speedup >= MIN_BF16_SPEEDUP
    return PrecisionChoice("bf16-mixed" if faster else "32-true",
                           f"CPU with {flag}, bf16 {'' if faster else 'not '}faster {where}", round(speedup, 3))
