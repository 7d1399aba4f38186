"""fetch_archive against a real HTTP server on 127.0.0.1, file:// URLs and plain paths."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import os
import socket
import stat
import tarfile
import threading
import time

import pytest

from cnnlab.data.download import fetch_archive
from cnnlab.errors import UserError
from tests.helpers import require
from tests.tiny_cifar import write_tiny_archive

WRONG_MD5 = "0" * 32


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class DroppingHandler(QuietHandler):
    """Announces the whole file, sends half of it, then closes the connection."""

    def do_GET(self):
        data = (self.server.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


def _serve(root, handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.root = root
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def served(tmp_path):
    """(folder served over HTTP, base URL)."""
    root = tmp_path / "srv"
    root.mkdir()
    server = _serve(root, QuietHandler)
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "resources" / "cifar-10-binary.tar.gz"


def leftovers(dest):
    """Everything in dest's folder: the archive, temporary files, temporary folders."""
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_http_download_is_verified_and_placed(served, dest):
    root, base = served
    md5 = write_tiny_archive(root / "c.tar.gz")
    assert fetch_archive(f"{base}/c.tar.gz", md5, dest, retries=0) == dest
    assert hashlib.md5(dest.read_bytes()).hexdigest() == md5
    assert leftovers(dest) == [dest.name]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_an_archive_fetched_over_http_gets_the_permissions_of_any_new_file(served, dest, tmp_path, umask):
    # The download lands in a private temporary file (mode 0600) first; the placed archive must not keep that mode.
    root, base = served
    md5 = write_tiny_archive(root / "c.tar.gz")
    old = os.umask(umask)
    try:
        fetch_archive(f"{base}/c.tar.gz", md5, dest, retries=0)
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE((tmp_path / "other").stat().st_mode) == 0o666 & ~umask


def test_progress_bar_with_tqdm_does_not_break_the_download(served, dest, capsys):
    require(importlib.util.find_spec("tqdm") is not None, "tqdm is not installed (Lightning normally brings it)")
    root, base = served
    md5 = write_tiny_archive(root / "c.tar.gz")
    fetch_archive(f"{base}/c.tar.gz", md5, dest, retries=0)
    assert dest.is_file()
    assert "100%" in capsys.readouterr().err  # the bar was drawn, to stderr


def test_file_url_and_plain_path(tmp_path, dest):
    src = tmp_path / "dir with space" / "c.tar.gz"
    src.parent.mkdir()
    md5 = write_tiny_archive(src)
    fetch_archive(src.as_uri(), md5, dest)
    assert hashlib.md5(dest.read_bytes()).hexdigest() == md5
    dest.unlink()
    fetch_archive(str(src), md5.upper(), dest)
    assert leftovers(dest) == [dest.name]


def _assert_mismatch(err, actual):
    msg = str(err.value)
    assert WRONG_MD5 in msg and actual in msg
    assert "data_md5" in msg and "again" in msg


def test_http_checksum_mismatch_names_both_md5s_and_leaves_nothing(served, dest):
    root, base = served
    actual = write_tiny_archive(root / "c.tar.gz")
    with pytest.raises(UserError) as err:
        fetch_archive(f"{base}/c.tar.gz", WRONG_MD5, dest, retries=0)
    _assert_mismatch(err, actual)
    assert leftovers(dest) == []


def test_local_checksum_mismatch_names_both_md5s_and_leaves_nothing(tmp_path, dest):
    actual = write_tiny_archive(tmp_path / "c.tar.gz")
    with pytest.raises(UserError) as err:
        fetch_archive(str(tmp_path / "c.tar.gz"), WRONG_MD5, dest)
    _assert_mismatch(err, actual)
    assert leftovers(dest) == []


def _truncate(path):
    good = hashlib.md5(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return good, hashlib.md5(path.read_bytes()).hexdigest()


def test_truncated_archive_over_http_is_a_mismatch(served, dest):
    root, base = served
    write_tiny_archive(root / "c.tar.gz")
    good, cut = _truncate(root / "c.tar.gz")
    with pytest.raises(UserError, match=cut):
        fetch_archive(f"{base}/c.tar.gz", good, dest, retries=0)
    assert leftovers(dest) == []


def test_truncated_local_archive_is_a_mismatch(tmp_path, dest):
    write_tiny_archive(tmp_path / "c.tar.gz")
    good, cut = _truncate(tmp_path / "c.tar.gz")
    with pytest.raises(UserError, match=cut):
        fetch_archive((tmp_path / "c.tar.gz").as_uri(), good, dest)
    assert leftovers(dest) == []


def test_connection_dropped_midway_is_an_error_and_leaves_nothing(tmp_path, dest):
    root = tmp_path / "srv"
    root.mkdir()
    md5 = write_tiny_archive(root / "c.tar.gz")
    server = _serve(root, DroppingHandler)
    try:
        with pytest.raises(UserError, match="Could not download"):
            fetch_archive(f"http://127.0.0.1:{server.server_address[1]}/c.tar.gz", md5, dest, retries=0)
    finally:
        server.shutdown()
        server.server_close()
    assert leftovers(dest) == []


def test_unreachable_url_fails_quickly_and_leaves_nothing(dest):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(UserError, match="Could not download .* after 2 tries"):
        fetch_archive(f"http://127.0.0.1:{port}/c.tar.gz", WRONG_MD5, dest, retries=1, timeout_s=5)
    assert time.monotonic() - t0 < 15
    assert leftovers(dest) == []


def test_missing_local_file_is_a_user_error(tmp_path, dest):
    with pytest.raises(UserError, match="does not exist"):
        fetch_archive(str(tmp_path / "nope.tar.gz"), WRONG_MD5, dest)
    assert leftovers(dest) == []


@pytest.mark.parametrize("md5", ["", "abc", "g" * 32, "0" * 31, "0" * 33])
def test_malformed_md5_is_a_user_error(tmp_path, dest, md5):
    src = tmp_path / "c.tar.gz"
    write_tiny_archive(src)
    with pytest.raises(UserError, match="not an MD5 checksum"):
        fetch_archive(str(src), md5, dest)
    assert not dest.exists()


def _hostile_archive(path):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/../../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_hostile_archive_with_matching_md5_is_refused_over_http(served, dest):
    root, base = served
    md5 = _hostile_archive(root / "c.tar.gz")
    with pytest.raises(UserError, match=r"\.\./\.\./evil\.txt"):
        fetch_archive(f"{base}/c.tar.gz", md5, dest, retries=0)
    assert leftovers(dest) == []


def test_hostile_archive_with_matching_md5_is_refused_locally(tmp_path, dest):
    md5 = _hostile_archive(tmp_path / "c.tar.gz")
    with pytest.raises(UserError, match=r"\.\./\.\./evil\.txt"):
        fetch_archive(str(tmp_path / "c.tar.gz"), md5, dest)
    assert leftovers(dest) == []
    assert not (tmp_path.parent / "evil.txt").exists()
