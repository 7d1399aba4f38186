"""Tiny archives in the official CIFAR-10 binary layout, written by the tests themselves.

Images are learnable on purpose: each class has its own mean colour and a class-dependent
stripe pattern plus noise, so a short training run can tell a working model from a broken one.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_records(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for i, c in enumerate(labels):
        base = 40 + 18 * c
        stripes = 60 * ((xx * (c % 4 + 1) + yy * (c // 4)) % 8 < 4)
        img = base + stripes[None] + rng.normal(0, 20, (3, 32, 32)) + np.array([c * 6, 80 - c * 5, 20])[:, None, None]
        images[i] = np.clip(img, 0, 255)
    return np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()


def write_tiny_archive(
    path: str | Path,
    n_per_batch: int = 100,
    n_test: int | None = None,
    members: dict | None = None,
    specials: list[tarfile.TarInfo] | None = None,
) -> str:
    """Write a .tar.gz in the binary layout; return its MD5. `members` replaces or adds raw members.

    `specials` are added as they are, without data: links, devices, fifos (hostile archives).
    """
    n_test = n_per_batch if n_test is None else n_test
    files = {f"data_batch_{i}.bin": make_records(n_per_batch, i) for i in range(1, 6)}
    files["test_batch.bin"] = make_records(n_test, 99)
    files["batches.meta.txt"] = ("\n".join(CLASSES) + "\n").encode()
    files["readme.html"] = b"<html>tiny test archive</html>"
    files = {f"cifar-10-batches-bin/{k}": v for k, v in files.items()}
    for name, data in (members or {}).items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in specials or ():
            tar.addfile(info)
    return hashlib.md5(path.read_bytes()).hexdigest()
