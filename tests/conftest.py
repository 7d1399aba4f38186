import os

import pytest

from cnnlab.study.precision import CPU_FLAGS_VARIABLE, SPEEDUP_VARIABLE
from tests.helpers import tiny_prepared

pytest_plugins = ["tests.browser"]

# Every machine runs the suite as a CPU without native bf16 (trainer.precision=auto is then 32-true
# without a probe), so that results do not depend on the CPU; tests/test_precision.py sets the flags
# it tests. Subprocesses (snakemake, cnnlab-train) inherit it.
os.environ[CPU_FLAGS_VARIABLE] = ""
os.environ.pop(SPEEDUP_VARIABLE, None)


@pytest.fixture(scope="session")
def arrays(tmp_path_factory):
    """A tiny prepared data set (tests.helpers.tiny_prepared), made once and only read by the tests."""
    return tiny_prepared(tmp_path_factory.mktemp("data"))
