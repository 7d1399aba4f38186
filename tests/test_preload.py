"""The warm process's shared copy of the prepared arrays (cnnlab.data.datamodule.preload): a job that
uses it trains on the same tensors, to the last bit, as one that reads the file itself."""

from __future__ import annotations

import os

import pytest
import torch

from cnnlab.data import datamodule
from cnnlab.data.batches import normalize
from cnnlab.data.preprocess import load_arrays, load_stats
from tests.helpers import tiny_prepared


@pytest.fixture
def arrays(tmp_path):
    path = tiny_prepared(tmp_path)
    yield path
    datamodule._preloaded.clear()


def test_scaled_images_give_the_same_tensors_as_the_uint8_ones(arrays):
    stats = load_stats(arrays)
    raw = load_arrays(arrays)
    datamodule.preload(arrays)
    for split in ("train", "val", "test"):
        uint8 = torch.from_numpy(raw[f"x_{split}"])
        shared = datamodule._arrays(arrays)[f"x_{split}"]
        assert shared.dtype == torch.float32
        for mean, std in ((None, None), (stats["mean"], stats["std"])):
            assert torch.equal(normalize(uint8, mean, std), normalize(shared, mean, std))
        # z-scoring writes a new tensor: the shared images stay on [0, 1]
        assert float(shared.max()) <= 1.0 and torch.equal(shared, normalize(uint8, None, None))


def test_the_shared_copy_serves_only_the_file_it_was_read_from(arrays, tmp_path):
    datamodule.preload(arrays)
    first = datamodule._arrays(arrays)
    assert datamodule._arrays(arrays) is first
    assert datamodule._arrays(arrays)["y_train"].dtype == torch.from_numpy(load_arrays(arrays)["y_train"]).dtype

    # The file prepared again (another modification time): read from the file, not the old copy.
    st = arrays.stat()
    os.utime(arrays, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fresh = datamodule._arrays(arrays)
    assert fresh is not first and fresh["x_train"].dtype == torch.uint8

    # Another file with the same contents is another file.
    other = tmp_path / "copy.npz"
    other.write_bytes(arrays.read_bytes())
    assert datamodule._arrays(other)["x_train"].dtype == torch.uint8
