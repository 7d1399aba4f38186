"""Split off a fixed validation set, compute z-score statistics on the training split, store arrays.

Output: one uncompressed `.npz` of uint8 images and labels (fast to load, no pickle) and a JSON
file with the per-channel statistics, class names and provenance.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from cnnlab.atomic import atomic_path
from cnnlab.data.cifar import read_archive
from cnnlab.errors import UserError

log = logging.getLogger(__name__)


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of range(n) cut into (train, val) index arrays."""
    if not 0 < val_size < n:
        raise UserError(f"val_size must be between 1 and {n - 1} (the training records), not {val_size}.")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def zscore_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the [0, 1] pixel scale.

    From each channel's counts of the 256 pixel values: no float copy of the images (1.1 GB for
    CIFAR-10's training split), and the sums are exact."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = np.bincount(x[:, channel].ravel(), minlength=256)
        mean = counts @ values / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return means, stds


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


SPLITS = ("train", "val", "test")
ARRAY_NAMES = tuple(f"{kind}_{split}" for split in SPLITS for kind in ("x", "y"))


def damaged_message(arrays: str | Path, why: str) -> str:
    """The one sentence for a damaged prepared data set: what is wrong and exactly how to rebuild it."""
    arrays = Path(arrays)
    stats = arrays.with_suffix(".json")
    return (
        f"The prepared data set {arrays} is damaged ({why}); delete {arrays} and {stats}, then run snakemake "
        "again: it prepares them again from the downloaded archive."
    )


def stats_path(arrays_path: str | Path) -> Path:
    """The statistics file written next to the arrays by preprocess.prepare."""
    return Path(arrays_path).with_suffix(".json")


def load_stats(arrays_path: str | Path) -> dict:
    path = stats_path(arrays_path)
    if not path.is_file():
        raise UserError(f"Data statistics {path} do not exist; run the workflow's prepare_data step first.")
    try:
        stats = json.loads(path.read_text())
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(damaged_message(arrays_path, f"{path.name} is not readable JSON: {type(e).__name__}")) from None
    ok = isinstance(stats, dict) and isinstance(stats.get("classes"), list) and stats["classes"] and all(
        isinstance(stats.get(k), list) and len(stats[k]) == 3 and all(isinstance(v, (int, float)) for v in stats[k])
        for k in ("mean", "std"))
    if not ok:
        raise UserError(damaged_message(arrays_path, f"{path.name} lacks the class names or the channel statistics"))
    return stats


def check_prepared(path: str | Path) -> None:
    """Raise UserError when the prepared arrays or their statistics are missing, truncated or not what
    prepare() writes. Reads only the zip directory and each array's header (milliseconds)."""
    path = Path(path)
    load_stats(path)
    if not path.is_file():
        raise UserError(f"Prepared data {path} does not exist; run the workflow's prepare_data step first.")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            members = {info.filename: info for info in z.infolist()}
            for name in ARRAY_NAMES:
                info = members.get(f"{name}.npy")
                if info is None:
                    raise UserError(damaged_message(path, f"it has no array '{name}'"))
                if info.header_offset + info.compress_size > size:
                    raise UserError(damaged_message(path, f"array '{name}' is cut short"))
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                if dtype.hasobject or int(np.prod(shape)) * dtype.itemsize > info.file_size:
                    raise UserError(damaged_message(path, f"array '{name}' is not the array prepare_data writes"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise UserError(damaged_message(path, f"not a readable .npz: {type(e).__name__}")) from None


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Prepared data {path} does not exist; run the workflow's prepare_data step first.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        # numpy's own message for an object array suggests allow_pickle=True, which would run code
        # from the file: it is never shown.
        raise UserError(damaged_message(path, f"not a readable .npz: {type(e).__name__}")) from None
    missing = [name for name in ARRAY_NAMES if name not in arrays]
    if missing:
        raise UserError(damaged_message(path, f"it has no array '{missing[0]}'"))
    return arrays
