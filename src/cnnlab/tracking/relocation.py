"""A moved or renamed project folder: the SQLite store's artifact locations follow it.

MLflow stores every artifact location absolute (it resolves a relative one when the experiment is
created), so after a move the store would still point at the old folder: artifacts would be
unreadable, and logging new ones would recreate the old folder. cnnlab keeps a SQLite store's
artifacts under `mlartifacts/` beside the database; when that prefix in the store is not the
database's own folder any more, it is rewritten in place. The workflow does this once as it
starts; after moving a folder by hand, `python -m cnnlab.tracking.relocation [results/mlflow.db]`
does it for cnnlab-train and cnnlab-eval. Only the standard library is used, so the Snakefile can
call this without importing MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

ARTIFACTS_FOLDER = "mlartifacts"
# (table, column) holding absolute artifact locations in MLflow's schema
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def _path_of(location: str) -> PurePosixPath | None:
    """The local path of a file: URI or absolute path; None for other schemes (a server, S3)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return PurePosixPath(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return PurePosixPath(location)
    return None


def _old_root(path: PurePosixPath) -> PurePosixPath | None:
    """The `.../mlartifacts` folder a location lies in (its last such component), else None."""
    parts = path.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == ARTIFACTS_FOLDER:
            return PurePosixPath(*parts[: i + 1])
    return None


def _moved(location: str, old: PurePosixPath, new: Path) -> str | None:
    path = _path_of(location)
    if path is None or not path.is_relative_to(old):
        return None
    return (new / path.relative_to(old)).as_uri()


def relocate_artifacts(db: str | Path, timeout_s: float = 30) -> int:
    """Point the store's artifact locations under this database's folder; returns the rows changed.

    A no-op (one read) for a store that has not moved, a missing database, or locations elsewhere.
    """
    db = Path(db)
    if not db.is_file():
        return 0
    new_root = db.resolve().parent / ARTIFACTS_FOLDER
    try:
        con = sqlite3.connect(db, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error:
        return 0
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        old_roots = set()
        for (location,) in con.execute("SELECT artifact_location FROM experiments"):
            path = _path_of(location or "")
            root = _old_root(path) if path else None
            # Moved: the old folder is gone and this database's own artifact folder holds the files.
            # (A store kept apart from its artifacts, or a copy beside the original, is left alone.)
            if root is not None and root != PurePosixPath(new_root) and not Path(root).exists() and new_root.is_dir():
                old_roots.add(root)
        if not old_roots:
            return 0
        changed = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for table, column in LOCATION_COLUMNS:
                if table not in tables:
                    continue
                rows = con.execute(f"SELECT rowid, {column} FROM {table}").fetchall()
                for rowid, location in rows:
                    for old in old_roots:
                        moved = _moved(location or "", old, new_root)
                        if moved is not None:
                            con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (moved, rowid))
                            changed += 1
                            break
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.warning("the project folder moved: %d artifact locations in %s now point under %s", changed, db, new_root)
        return changed
    except sqlite3.Error as e:  # locked for longer than timeout_s, or not an MLflow database
        log.warning("could not check the artifact locations in %s (%s)", db, e)
        return 0
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnlab.tracking.relocation",
        description="Point a moved SQLite store's artifact locations under its own folder's mlartifacts/.",
    )
    parser.add_argument("db", nargs="?", default="results/mlflow.db", help="the store's database file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.db).is_file():
        print(f"cnnlab: error: {args.db} does not exist; give the path of the project's mlflow.db.", file=sys.stderr)
        return 2
    print(f"{relocate_artifacts(args.db)} artifact locations changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
