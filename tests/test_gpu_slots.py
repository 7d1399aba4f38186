"""One GPU per job: concurrent processes get different slots, and a killed one frees its slot.

No GPU is needed: the allocator is given the GPU count; the processes and locks are real.
"""

import os
import signal
import subprocess
import sys
import time

CHILD = """
import sys, time
from pathlib import Path
from cnnlab.gpu import acquire_gpu_slot
index, lock = acquire_gpu_slot(int(sys.argv[1]), Path(sys.argv[2]), wait_s=60)
print(index, flush=True)
time.sleep(float(sys.argv[3]))
"""


def _start(n_gpus, lock_dir, hold_s):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(n_gpus), str(lock_dir), str(hold_s)],
                            stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    procs = [_start(3, tmp_path, 3) for _ in range(3)]
    slots = [int(p.stdout.readline()) for p in procs]
    assert sorted(slots) == [0, 1, 2]
    for p in procs:
        p.wait(timeout=60)


def test_a_fourth_job_waits_for_a_slot_and_a_sigkilled_job_frees_its_own(tmp_path):
    holders = [_start(2, tmp_path, 120) for _ in range(2)]
    taken = {int(p.stdout.readline()): p for p in holders}
    assert set(taken) == {0, 1}
    waiter = _start(2, tmp_path, 0)
    time.sleep(2)
    assert waiter.poll() is None  # both GPUs busy: it waits
    os.kill(taken[1].pid, signal.SIGKILL)  # the kernel drops the dead process's lock
    assert int(waiter.stdout.readline()) == 1
    waiter.wait(timeout=30)
    taken[0].kill()
    for p in holders:
        p.wait(timeout=30)


def test_no_gpus_means_no_slot(tmp_path):
    from cnnlab.gpu import acquire_gpu_slot

    assert acquire_gpu_slot(0, tmp_path) is None
