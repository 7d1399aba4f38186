"""Write files so that a killed process never leaves one that looks finished."""

from __future__ import annotations

import os
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
            os.replace(self.tmp, self.target)  # atomic on POSIX within one file system
        else:
            Path(self.tmp).unlink(missing_ok=True)


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
