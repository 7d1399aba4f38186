"""Write files so that a killed process never leaves one that looks finished."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class atomic_path:
    """Context manager giving a temporary path next to `target`; renamed onto it only on success."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> str:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.")
        os.close(fd)
        usual_permissions(self.tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            # The bytes on disk before the name moves, and the move itself on disk after: a power loss
            # then leaves the old file or the whole new one under the name, never an empty one.
            sync(self.tmp)
            os.replace(self.tmp, self.target)  # atomic on POSIX within one file system
            sync(self.target.parent)
        else:
            Path(self.tmp).unlink(missing_ok=True)


def sync(path: str | Path) -> None:
    """fsync a file, or a folder (its entries: a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_text(text)


def usual_permissions(path: str | Path) -> None:
    """rw for all, less the umask, as open() gives a new file; temporary files are made 0600."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clear_leftovers(folder: str | Path, names: list[str]) -> list[Path]:
    """Remove what a killed writer left in folder: the temporary files atomic_path makes for each of
    `names` (`.<name>.*`) and download folders (`.download-*`). Only the process that owns the folder
    calls it, as it starts, when no writer of its can be running."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in folder.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    for tmp in folder.glob(".download-*"):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def keep_newest(paths, keep: int = 1) -> list[Path]:
    """Remove all but the `keep` newest (by name, which carries their time) of paths: files or folders."""
    removed = []
    for old in sorted(paths)[:-keep] if keep else sorted(paths):
        (shutil.rmtree if old.is_dir() else Path.unlink)(old)
        removed.append(old)
    return removed
