import os

from cnnlab.study.precision import CPU_FLAGS_VARIABLE, SPEEDUP_VARIABLE

pytest_plugins = ["tests.browser"]

# Every machine runs the suite as a CPU without native bf16 (trainer.precision=auto is then 32-true
# without a probe), so that results do not depend on the CPU; tests/test_precision.py sets the flags
# it tests. Subprocesses (snakemake, cnnlab-train) inherit it.
os.environ[CPU_FLAGS_VARIABLE] = ""
os.environ.pop(SPEEDUP_VARIABLE, None)
