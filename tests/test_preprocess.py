"""prepare: a fixed split, training-set statistics applied to every split, outputs all-or-nothing."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from cnnlab.data.batches import normalize
from cnnlab.data.cifar import read_archive
from cnnlab.data.preprocess import load_arrays, prepare, split_indices, zscore_stats
from cnnlab.errors import UserError
from tests.tiny_cifar import write_tiny_archive


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(archive, arrays, stats) from a 250 + 30 record archive with 50 held out for validation."""
    d = tmp_path_factory.mktemp("prep")
    md5 = write_tiny_archive(d / "a.tar.gz", n_per_batch=50, n_test=30)
    stats = prepare(d / "a.tar.gz", d / "out" / "c.npz", d / "out" / "c.json", md5, val_size=50, split_seed=3,
                    train_records=250, test_records=30)
    return d / "a.tar.gz", load_arrays(d / "out" / "c.npz"), stats


def test_split_is_fixed_by_the_seed_disjoint_and_complete():
    tr, va = split_indices(1000, 100, seed=7)
    tr2, va2 = split_indices(1000, 100, seed=7)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 100 and len(tr) == 900
    assert np.intersect1d(tr, va).size == 0
    assert np.array_equal(np.union1d(tr, va), np.arange(1000))
    assert not np.array_equal(split_indices(1000, 100, seed=8)[1], va)


@pytest.mark.parametrize("val_size", [0, 1000, -1])
def test_impossible_validation_size_is_a_user_error(val_size):
    with pytest.raises(UserError, match="val_size"):
        split_indices(1000, val_size, seed=0)


def test_zscore_stats_match_a_hand_computation():
    x = np.zeros((2, 3, 1, 2), dtype=np.uint8)
    x[:, 0] = [[[0, 255]], [[0, 255]]]  # red: half 0, half 1 -> mean 0.5, std 0.5
    x[:, 1] = 51  # green: constant 0.2 -> std 0
    x[0, 2], x[1, 2] = 0, 102  # blue: 0, 0, 0.4, 0.4 -> mean 0.2, std 0.2
    mean, std = zscore_stats(x)
    assert mean == pytest.approx([0.5, 0.2, 0.2])
    assert std == pytest.approx([0.5, 0.0, 0.2])


def test_zscore_stats_are_exact_and_what_training_uses_matches_the_float_computation():
    x = np.random.default_rng(0).integers(0, 256, size=(500, 3, 32, 32), dtype=np.uint8)
    mean, std = zscore_stats(x)
    for c in range(3):
        pixels = x[:, c].astype(np.int64)
        exact_mean = Fraction(int(pixels.sum()), pixels.size * 255)
        exact_var = Fraction(int((pixels * pixels).sum()), pixels.size * 255**2) - exact_mean**2
        assert mean[c] == pytest.approx(float(exact_mean), rel=1e-15)
        assert std[c] == pytest.approx(math.sqrt(exact_var), rel=1e-15)
    # Training z-scores in float32 (cnnlab.data.batches.normalize): in float32 these statistics are
    # those of the images converted to floats, here as on CIFAR-10's training split (docs/dev/notes.md).
    xf = x.astype(np.float64) / 255.0
    assert np.array_equal(np.float32(mean), np.float32(xf.mean(axis=(0, 2, 3))))
    assert np.array_equal(np.float32(std), np.float32(xf.std(axis=(0, 2, 3))))


def test_prepared_split_matches_the_archive_and_the_seed(prepared):
    archive, arrays, stats = prepared
    data = read_archive(archive, 250, 30)
    tr, va = split_indices(250, 50, seed=3)
    assert np.array_equal(arrays["x_train"], data.x_train[tr]) and np.array_equal(arrays["y_val"], data.y_train[va])
    assert np.array_equal(arrays["x_test"], data.x_test)
    assert (stats["n_train"], stats["n_val"], stats["n_test"]) == (200, 50, 30)


def test_stats_are_those_of_the_training_split_only(prepared):
    _, arrays, stats = prepared
    train = arrays["x_train"].astype(np.float64) / 255
    assert stats["mean"] == pytest.approx(train.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    assert stats["std"] == pytest.approx(train.std(axis=(0, 2, 3)).tolist(), abs=1e-12)
    everything = np.concatenate([arrays["x_train"], arrays["x_val"]]).astype(np.float64) / 255
    assert stats["mean"] != pytest.approx(everything.mean(axis=(0, 2, 3)).tolist(), abs=1e-9)


def test_val_and_test_are_normalized_with_the_training_statistics(prepared):
    _, arrays, stats = prepared
    m, s = np.array(stats["mean"])[:, None, None], np.array(stats["std"])[:, None, None]
    train = normalize(torch.from_numpy(arrays["x_train"]), stats["mean"], stats["std"]).double()
    assert train.mean(dim=(0, 2, 3)).tolist() == pytest.approx([0, 0, 0], abs=1e-5)
    assert train.std(dim=(0, 2, 3), unbiased=False).tolist() == pytest.approx([1, 1, 1], abs=1e-5)
    for split in ("val", "test"):
        got = normalize(torch.from_numpy(arrays[f"x_{split}"]), stats["mean"], stats["std"]).numpy()
        by_hand = (arrays[f"x_{split}"] / 255.0 - m) / s
        assert np.allclose(got, by_hand, atol=1e-5)


def test_stats_file_is_json_with_classes_and_provenance(prepared):
    archive, _, stats = prepared
    on_disk = json.loads((archive.parent / "out" / "c.json").read_text())
    assert on_disk == stats
    assert len(on_disk["classes"]) == 10 and on_disk["split_seed"] == 3 and len(on_disk["archive_md5"]) == 32


def test_bad_archive_leaves_no_output_at_all(tmp_path):
    missing = {"cifar-10-batches-bin/test_batch.bin": None}
    md5 = write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10, members=missing)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="test_batch.bin"):
        prepare(tmp_path / "a.tar.gz", out / "c.npz", out / "c.json", md5, val_size=5, train_records=50,
                test_records=10)
    assert not out.exists() or list(out.iterdir()) == []


def test_failure_while_writing_leaves_neither_output(tmp_path):
    md5 = write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "blocked").write_text("a file where the stats folder should be")
    with pytest.raises(OSError):
        prepare(tmp_path / "a.tar.gz", out / "c.npz", tmp_path / "blocked" / "c.json", md5, val_size=5,
                train_records=50, test_records=10)
    assert list(out.iterdir()) == []
