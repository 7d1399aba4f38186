"""Split off a fixed validation set, compute z-score statistics on the training split, store arrays.

Output: one uncompressed `.npz` of uint8 images and labels (fast to load, no pickle) and a JSON
file with the per-channel statistics, class names and provenance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cnnlab.atomic import atomic_path
from cnnlab.cifar import read_archive
from cnnlab.errors import UserError

log = logging.getLogger(__name__)


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of range(n) cut into (train, val) index arrays."""
    if not 0 < val_size < n:
        raise UserError(f"val_size must be between 1 and {n - 1} (the training records), not {val_size}.")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def zscore_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the [0, 1] pixel scale."""
    xf = x.astype(np.float64) / 255.0
    return xf.mean(axis=(0, 2, 3)).tolist(), xf.std(axis=(0, 2, 3)).tolist()


def prepare(
    archive: str | Path,
    arrays_out: str | Path,
    stats_out: str | Path,
    md5: str,
    val_size: int = 5000,
    split_seed: int = 0,
    train_records: int = 50000,
    test_records: int = 10000,
    source_url: str = "",
) -> dict:
    data = read_archive(archive, train_records, test_records)
    tr, va = split_indices(len(data.y_train), val_size, split_seed)
    mean, std = zscore_stats(data.x_train[tr])
    stats = {
        "mean": mean,
        "std": std,
        "classes": list(data.classes),
        "n_train": len(tr),
        "n_val": len(va),
        "n_test": len(data.y_test),
        "val_size": val_size,
        "split_seed": split_seed,
        "archive_md5": md5,
        "source_url": source_url,  # where the archive came from (without credentials), for MLflow's dataset input
    }
    arrays = {
        "x_train": data.x_train[tr],
        "y_train": data.y_train[tr],
        "x_val": data.x_train[va],
        "y_val": data.y_train[va],
        "x_test": data.x_test,
        "y_test": data.y_test,
    }
    # Both files are written under temporary names and renamed only once both are complete, so a
    # failure anywhere leaves neither (never arrays without their statistics).
    with atomic_path(arrays_out) as arrays_tmp, atomic_path(stats_out) as stats_tmp:
        with open(arrays_tmp, "wb") as f:
            np.savez(f, **arrays)
        Path(stats_tmp).write_text(json.dumps(stats, indent=2) + "\n")
    log.info(
        "prepared %d train / %d val / %d test images; mean %s std %s", len(tr), len(va), len(data.y_test), mean, std
    )
    return stats


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Prepared data {path} does not exist; run the workflow's prepare_data step first.")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
