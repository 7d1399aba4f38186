"""Training jobs that start warm: `python -m cnnlab.launch.forkserver <cnnlab-train arguments>`.

A training job spends most of its start-up importing torch, Lightning and MLflow (seconds of CPU:
docs/dev/notes.md). The workflow's jobs therefore go through this small client:
it asks a warm process, which has made those imports once, to fork a child that runs
`cnnlab-train` with the job's arguments, working folder, environment, umask and standard streams
(passed over a Unix socket), and it waits for the child's exit status. To Snakemake the client is
the job: its exit status, log and signals are the child's (SIGTERM and SIGINT are passed on; if
the client is killed outright, the child sees its socket close and stops as on SIGTERM).

The workflow starts the warm process as it begins, when it has training jobs to run
(`--prestart`, from its onstart handler), so that it is ready by the time they come; otherwise the
first job starts it and waits for it. It exits after `IDLE_S` seconds without a job. One warm
process serves one Python environment, source tree and working folder (all part of its socket's
name), so an edited or reinstalled cnnlab starts a new one. Where a warm start cannot work the
client runs `python -m cnnlab.training.train` in its own process instead: on SLURM (each job is its own
allocation), with CNNLAB_WARM_START=0, when the socket folder is not private to this user, or when
the warm process could not start (its log says why).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cnnlab.process_start import JOB_STARTED_VARIABLE, process_start_time

IDLE_S = float(os.environ.get("CNNLAB_WARM_IDLE_S", "60"))  # a study's next job comes within seconds
START_TIMEOUT_S = 180  # the imports take 7-25 s, more on a loaded machine
PACKAGE = Path(__file__).resolve().parents[1]  # the whole cnnlab package
# Read when an interpreter or library starts: a warm process made under other values would differ.
_STARTUP_ENV = ("PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "TORCH", "PYTORCH", "MLFLOW_")
_MESSAGE = 1 << 20


def main(args: list[str]) -> int:
    if args[:1] == ["--serve"]:
        return serve(Path(args[1]))
    if args == ["--prestart"]:
        return prestart()
    if not warm_starts_wanted():
        _run_cold(args)
    path = socket_path()
    conn = _connect_or_start(path) if path is not None else None
    if conn is None:
        _run_cold(args)
    return _run_warm(conn, args)


def warm_starts_wanted() -> bool:
    return os.environ.get("CNNLAB_WARM_START", "1") != "0" and "SLURM_JOB_ID" not in os.environ


def prestart() -> int:
    """Start the warm process a job run from this environment and folder would use, and return once
    it answers, without a job: the workflow's first training jobs then find it ready instead of
    each waiting for its imports. Nothing to do (status 0) wherever jobs would start cold."""
    path = socket_path() if warm_starts_wanted() else None
    conn = _connect_or_start(path) if path is not None else None
    if conn is not None:
        conn.close()  # a connection that asks for nothing: the warm process forks no job for it
    return 0


def _run_cold(args: list[str]) -> None:
    """This process becomes `python -m cnnlab.training.train args` (same pid, streams and signals)."""
    os.execv(sys.executable, [sys.executable, "-m", "cnnlab.training.train", *args])


# --- the client ---------------------------------------------------------------------------------


def socket_path() -> Path | None:
    """The warm process's socket for this interpreter, source tree and folder; None without a private folder."""
    root = _private_folder()
    if root is None:
        return None
    key = hashlib.sha256()
    for part in (sys.executable, *sys.path, os.getcwd()):
        key.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for name in sorted(os.environ):
        if name.startswith(_STARTUP_ENV):
            key.update(f"{name}={os.environ[name]}\0".encode("utf-8", "surrogateescape"))
    for source in sorted(PACKAGE.rglob("*.py")):
        st = source.stat()
        key.update(f"{source}:{st.st_mtime_ns}:{st.st_size}\0".encode("utf-8", "surrogateescape"))
    return root / f"warm-{key.hexdigest()[:20]}.sock"


def _private_folder() -> Path | None:
    """$XDG_RUNTIME_DIR (else the temporary folder)/cnnlab-<uid>; None unless only this user can write in it."""
    root = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"cnnlab-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        st = root.lstat()
    except OSError:
        return None
    # Whoever can write in it could run code as this user through a socket of their own.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return root


def _try_connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _connect_or_start(path: Path) -> socket.socket | None:
    """A connection to the warm process, started (one per path: a lock) if none answers."""
    conn = _try_connect(path)
    if conn is not None:
        return conn
    with _locked(path.with_suffix(".lock")):  # the others wait here while one starts it
        conn = _try_connect(path)
        if conn is not None:
            return conn
        with open(path.with_suffix(".log"), "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "cnnlab.launch.forkserver", "--serve", str(path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.poll() is None:
            conn = _try_connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
    return None


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Hold an exclusive lock on lock_path. A warm process that ends removes its lock file (under
    the lock): whoever locked the removed file then sees it is no longer the one at lock_path and
    locks the new one, so two clients never both think they hold the lock."""
    while True:
        lock = open(lock_path, "a")  # noqa: SIM115  closed below, or on leaving the block
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    with lock:
        yield


def _tidy(path: Path) -> None:
    """Remove the lock file of an ended warm process's socket, and its log when nothing was written
    there, unless a client holds the lock (it is starting the next one). Every change to the source
    tree makes a new socket name, so files left behind would pile up in the folder."""
    lock_path, log = path.with_suffix(".lock"), path.with_suffix(".log")
    try:
        lock = open(lock_path, "a")  # noqa: SIM115
    except OSError:
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        if path.exists():
            return  # a new warm process already serves it
        with contextlib.suppress(OSError):
            if log.stat().st_size == 0:
                log.unlink()
        with contextlib.suppress(OSError):
            lock_path.unlink()


def _run_warm(conn: socket.socket, args: list[str]) -> int:
    request = {
        "args": args,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": _current_umask(),
        "started": process_start_time(),
    }
    with conn:
        try:
            socket.send_fds(conn, [json.dumps(request).encode("utf-8", "surrogateescape")], [0, 1, 2])
            first = conn.recv(_MESSAGE)
        except OSError:  # e.g. an environment too large for one message
            first = b""
        if not first:  # or the warm process was ending as this job came: start cold
            conn.close()
            _run_cold(args)
        child = json.loads(first)["pid"]

        forwarded = []

        def forward(signum, _frame):
            forwarded.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        reply = conn.recv(_MESSAGE)  # signals forwarded meanwhile do not interrupt it (PEP 475)
    if not reply and forwarded:  # the child died of the signal passed on: so does the job
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    if not reply:
        print(f"cnnlab: the training process ({child}) ended without an exit status: it was killed "
              "(out of memory?); run the same command again to resume.", file=sys.stderr)  # fmt: skip
        return 1
    return int(json.loads(reply)["exit"])


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- the warm process ---------------------------------------------------------------------------


def serve(path: Path) -> int:
    """Import everything a training job needs, then fork one child per job until idle."""
    import gc

    import setproctitle

    # It replaces its socket file and removes it at the end: only ever a socket in a private folder.
    if path.parent != _private_folder() or not path.name.startswith("warm-") or path.suffix != ".sock":
        print(f"cnnlab: {path} is not a warm-process socket of this user's private folder", file=sys.stderr)
        return 2

    # Before anything changes the environment: setproctitle takes the memory of the original
    # command line and environment for the children's names, which it finds only untouched.
    setproctitle.getproctitle()
    import cnnlab.training.train  # noqa: F401  the imports every job would make

    # A CUDA driver set up in this process cannot be used by forked children.
    if any("libcuda.so" in line for line in Path("/proc/self/maps").read_text().splitlines()):
        print("cnnlab: importing the training code started CUDA; jobs start cold.", file=sys.stderr)
        return 1
    _warm_up()
    gc.collect()
    gc.freeze()  # the children's collections leave the imported objects' pages shared
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging = path.with_name(f"{path.name}.{os.getpid()}")
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # atomically: a client connects to a listening socket or to none
    for other in path.parent.glob("warm-*.lock"):  # those of warm processes killed outright
        if other != path.with_suffix(".lock"):
            _tidy(other.with_suffix(".sock"))
    bound = path.stat().st_ino
    # SIGTERM (a user's kill, a machine shutting down) ends it as the idle time does: socket and
    # lock file removed. Each forked job sets its own handlers again.
    signal.signal(signal.SIGTERM, _stop_serving)
    children: set[int] = set()
    last_active = time.monotonic()
    listener.settimeout(1.0)
    try:
        while True:
            children = {pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)}
            if children:
                last_active = time.monotonic()
            elif time.monotonic() - last_active > IDLE_S:
                return 0
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last_active = time.monotonic()
            with conn:
                pid = _fork_job(conn, listener)
            if pid:
                children.add(pid)
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == bound:
                path.unlink()
        listener.close()
        _tidy(path)


def _stop_serving(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _warm_up() -> None:
    """Once here what each job would do first: compose a config (Hydra's grammar, the config
    files' search path), draw a figure (matplotlib's font cache), and load MLflow's store
    modules, which MLflow imports only when a client first opens a store (the SQLite store's
    SQLAlchemy models and their mapper set-up are a large share of a cold job's start)."""
    import io

    import mlflow.store.tracking.rest_store  # noqa: F401  (a tracking server)
    import mlflow.store.tracking.sqlalchemy_store as sql_store  # SQLite, the workflow's default

    from cnnlab import figures
    from cnnlab.study.studies import compose_config

    sql_store.sqlalchemy.orm.configure_mappers()  # through MLflow's import: SQLAlchemy is MLflow's dependency
    compose_config(["tracking=none"])
    fig, ax = figures.plt.subplots()
    ax.set_title("warm-up")
    fig.savefig(io.BytesIO(), format="png")
    figures.plt.close(fig)


def _fork_job(conn: socket.socket, listener: socket.socket) -> int | None:
    """Fork the child for the job requested on conn; its pid (None for a request not taken)."""
    conn.settimeout(10)
    try:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        data, fds, _, _ = socket.recv_fds(conn, _MESSAGE, 3)
    except OSError:
        return None
    request = _request(data) if uid == os.getuid() and len(fds) == 3 else None
    if request is None:
        for fd in fds:
            os.close(fd)
        return None
    _preload_arrays(request)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    code = 1
    try:
        listener.close()
        conn.settimeout(None)
        code = _child(conn, request, fds)
    except BaseException:  # before the job's own handling: into the job's log (stderr by now)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _request(data: bytes) -> dict | None:
    """A job request as the client sends it; None for anything else (an empty or garbled message)."""
    try:
        request = json.loads(data) if data else None
    except ValueError:
        return None
    return request if isinstance(request, dict) and isinstance(request.get("args"), list) else None


def _preload_arrays(request: dict) -> None:
    """Load the prepared arrays a job names (`data.arrays=...`, as the workflow's jobs do) here,
    once: this job and the later ones share them (cnnlab.data.datamodule.preload)."""
    import torch

    from cnnlab.data import datamodule

    named = [a.split("=", 1)[1] for a in request["args"] if a.startswith("data.arrays=")]
    if not named:
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP thread pool in a process that forks: a child could hang on it
    try:
        datamodule.preload(Path(request["cwd"], named[-1]))
    except Exception:  # the job reads the file itself and says what is wrong with it
        pass
    finally:
        torch.set_num_threads(threads)


def _child(conn: socket.socket, request: dict, fds: list[int]) -> int:
    """Become the job's process, run cnnlab-train, send back its exit status."""
    import atexit
    import importlib.util
    import random

    import numpy as np
    import setproctitle

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        stream.reconfigure(line_buffering=os.isatty(stream.fileno()) or name == "stderr")
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    tempfile.tempdir = None  # found again from this job's TMPDIR
    random.seed()  # a fresh process's: every child would otherwise repeat the same draws
    np.random.seed()
    if request["started"] is not None:  # the job counts from its client's start, not this fork's
        os.environ[JOB_STARTED_VARIABLE] = repr(request["started"])
    train = importlib.util.find_spec("cnnlab.training.train")
    # As `python -m cnnlab.training.train` sees itself: Lightning re-launches DDP processes from these.
    sys.modules["__main__"].__spec__ = train
    sys.argv = [train.origin, *request["args"]]
    # What ps, top and `pkill -f cnnlab.training.train` see: the job, not the warm process it came from.
    setproctitle.setproctitle(shlex.join([sys.executable, "-m", "cnnlab.training.train", *request["args"]]))
    conn.sendall(json.dumps({"pid": os.getpid()}).encode())
    threading.Thread(target=_stop_when_client_goes, args=(conn,), daemon=True).start()

    from cnnlab.training.train import main

    print(f"cnnlab: job process {os.getpid()}, forked from the warm process {os.getppid()} (cnnlab.launch.forkserver)",
          file=sys.stderr)  # fmt: skip
    try:
        code = main()
    except SystemExit as e:
        code = _exit_status(e.code)
    except BaseException:  # as the interpreter would: the traceback, then status 1
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"exit": code}).encode())
    return code


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _stop_when_client_goes(conn: socket.socket) -> None:
    """The client killed outright (SIGKILL) closes the socket: stop as a SIGTERM would."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
