"""Which MLflow store a command uses, with any credentials in its URI moved into MLflow's own variables.

A URI such as `http://user:password@host:5000` is split once, where the workflow or a command
starts: the user name and password go to MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD
(MLflow reads them for every request, and child processes inherit them), and the URI keeps only
the address. From then on no config, parameter, tag, file, log line or command line holds a
secret, so nothing downstream has to scrub one. Standard library only: the Snakefile imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from cnnlab.errors import UserError

DEFAULT_DB = "results/mlflow.db"
URI_VARIABLE = "MLFLOW_TRACKING_URI"
USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"
# The schemes whose credentials MLflow takes from its variables (its REST client's basic auth).
HTTP_SCHEMES = ("http", "https")


def has_credentials(uri: str) -> bool:
    """Whether the URI holds what must not be shown: a server's user or password, a database's password.

    A database URI may name its user (`postgresql://alice@db/mlflow`): its driver takes the
    password from elsewhere (PGPASSWORD, ~/.pgpass).
    """
    parts = urlsplit(uri)
    return "@" in parts.netloc if parts.scheme in HTTP_SCHEMES else parts.password is not None


def move_credentials(uri: str, source: str = "the tracking URI") -> str:
    """The URI without its user name and password, which are put into MLflow's variables.

    source names where the URI came from, for the one sentence a bad one gets; it never quotes
    the URI, which holds the secret.
    """
    if not has_credentials(uri):
        return uri
    parts = urlsplit(uri)
    if parts.scheme not in HTTP_SCHEMES:
        raise UserError(
            f"{source} carries a password for a {parts.scheme} store, which MLflow can only "
            f"take from the URI itself; give the database driver its password another way (PostgreSQL: PGPASSWORD or "
            f"~/.pgpass), or serve the store with `mlflow server` and set {USERNAME_VARIABLE} and "
            f"{PASSWORD_VARIABLE}."
        )
    userinfo, _, address = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    for variable, value in ((USERNAME_VARIABLE, unquote(user)), (PASSWORD_VARIABLE, unquote(password))):
        if variable == PASSWORD_VARIABLE and not has_password:
            continue
        if os.environ.get(variable, value) != value:
            raise UserError(
                f"{source} and {variable} name different credentials; keep them in {USERNAME_VARIABLE} and "
                f"{PASSWORD_VARIABLE} only, and leave them out of the URI."
            )
        os.environ[variable] = value
    return urlunsplit(parts._replace(netloc=address))


def move_environment_credentials() -> None:
    """MLFLOW_TRACKING_URI rewritten without credentials, which go into MLflow's variables."""
    uri = os.environ.get(URI_VARIABLE)
    if uri:
        os.environ[URI_VARIABLE] = move_credentials(uri, URI_VARIABLE)


def resolve_uri(configured: str = "", default_db: str | Path = DEFAULT_DB) -> str:
    """MLFLOW_TRACKING_URI wins, then the configured URI, then SQLite at results/mlflow.db.

    The default stays relative (to the working directory), so a project folder can be moved. A URI
    that still carries credentials did not pass through a command's start: it is refused, not used.
    """
    uri = os.environ.get(URI_VARIABLE) or configured or f"sqlite:///{Path(default_db).as_posix()}"
    if has_credentials(uri):
        raise UserError(
            f"The tracking URI carries credentials; set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} "
            "instead, or start the work through cnnlab-train, cnnlab-eval, python -m cnnlab.report or snakemake, "
            "which move them there."
        )
    return uri


def store_uri(configured: str = "", source: str = "the tracking URI") -> str:
    """For a command's start: the store's URI as resolve_uri chooses it, its credentials moved
    into MLflow's variables (MLFLOW_TRACKING_URI, when set, rewritten without them)."""
    move_environment_credentials()
    if os.environ.get(URI_VARIABLE) or not configured:
        return resolve_uri()
    return resolve_uri(move_credentials(configured, source))


# File systems whose locking SQLite cannot rely on (its documentation: WAL needs shared memory on one
# host; NFS, Lustre and GPFS locks are unreliable or slow under many writers).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
                       "fuse.sshfs", "9p", "afs", "panfs", "pvfs2", "orangefs", "fuse.glusterfs", "fuse.ceph")


def filesystem_of(path: str | Path, mounts: str | None = None) -> str:
    """The type of the file system holding path (its longest mount point in /proc/mounts); "" if unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target = Path(path).resolve()
    best, kind = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == Path(point) or Path(point) in target.parents) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def on_network_filesystem(path: str | Path, mounts: str | None = None) -> str:
    """The network file system's type when path lies on one, else ""."""
    kind = filesystem_of(path, mounts)
    return kind if kind in NETWORK_FILESYSTEMS else ""
