"""Read the CIFAR-10 binary archive: every member checked, nothing extracted to disk, no pickle.

Each record is 3073 bytes: one label byte (0-9), then 1024 red, 1024 green and 1024 blue pixels
of a 32x32 image, row-major.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cnnlab.errors import UserError

RECORD_BYTES = 3073
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"


@dataclass(frozen=True)
class Cifar10:
    x_train: np.ndarray  # (50000, 3, 32, 32) uint8
    y_train: np.ndarray  # (50000,) uint8
    x_test: np.ndarray  # (10000, 3, 32, 32) uint8
    y_test: np.ndarray  # (10000,) uint8
    classes: tuple[str, ...]


def check_members(tar: tarfile.TarFile, archive: str | Path) -> dict[str, tarfile.TarInfo]:
    """Refuse absolute paths, '..', links and device files; return the regular files by name."""
    files = {}
    fix = "use the official CIFAR-10 binary archive"
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise UserError(f"Refusing archive {archive}: member '{m.name}' points outside the archive folder; {fix}.")
        if m.issym() or m.islnk():
            raise UserError(f"Refusing archive {archive}: member '{m.name}' is a link; {fix}.")
        if not (m.isfile() or m.isdir()):
            raise UserError(f"Refusing archive {archive}: member '{m.name}' is a device or special file; {fix}.")
        if m.isfile():
            files[str(p)] = m
    return files


def read_archive(archive: str | Path, train_records: int = 50000, test_records: int = 10000) -> Cifar10:
    """Parse the archive in memory; any deviation from the official layout is a UserError naming the file."""
    archive = Path(archive)
    if not archive.is_file():
        raise UserError(f"The archive {archive} does not exist; run the workflow's download_archive step first.")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            files = check_members(tar, archive)

            def read(name: str) -> bytes:
                key = f"{FOLDER}/{name}"
                if key not in files:
                    raise UserError(f"The archive {archive} has no {key}; is it the CIFAR-10 *binary* version?")
                return tar.extractfile(files[key]).read()

            train = [_records(read(n), n) for n in TRAIN_FILES]
            test = _records(read(TEST_FILE), TEST_FILE)
            classes = tuple(ln.strip() for ln in read(META_FILE).decode().splitlines() if ln.strip())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(
            f"The archive {archive} is damaged or truncated ({e}); delete it and download it again."
        ) from None
    if len(classes) != 10:
        raise UserError(f"{META_FILE} in {archive} names {len(classes)} classes; CIFAR-10 has 10.")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    for name, n, want in (("training", len(y_train), train_records), ("test", len(test[1]), test_records)):
        if n != want:
            raise UserError(f"The archive {archive} holds {n} {name} records; {want} were expected.")
    return Cifar10(x_train, y_train, test[0], test[1], classes)


def _records(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise UserError(f"{name} is {len(raw)} bytes, not a whole number of {RECORD_BYTES}-byte records.")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = rec[:, 0].copy()
    if labels.max() > 9:
        raise UserError(f"{name} holds label {int(labels.max())}; CIFAR-10 labels are 0-9.")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
