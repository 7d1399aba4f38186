"""When a job's process started: start-up times count from there, even for a job forked warm."""

from __future__ import annotations

import os
import time
from pathlib import Path

# Set by the warm process (cnnlab.launch.forkserver) in a job it forks: the job's own client started then.
JOB_STARTED_VARIABLE = "CNNLAB_JOB_STARTED"


def process_start_time() -> float | None:
    """When this process was created, in seconds since the epoch (Linux /proc); None where unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # Field 22 of proc(5), counted after the command name: clock ticks after boot. (/proc/stat's
        # btime, the boot time, is whole seconds: up to a second off.)
        start_ticks = int(fields[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_boot
    except (OSError, ValueError, IndexError):
        return None


def job_start_time() -> float | None:
    """When this job started, in seconds since the epoch: its warm client's start, else this process's."""
    forked = os.environ.get(JOB_STARTED_VARIABLE)
    return float(forked) if forked else process_start_time()


def seconds_since_job_start() -> float | None:
    """Wall seconds since this job's process was created, None where unknown."""
    started = job_start_time()
    return None if started is None else time.time() - started
