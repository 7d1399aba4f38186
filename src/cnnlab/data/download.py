"""Fetch the CIFAR-10 binary archive, checksum verified, written only once it is known to be good.

HTTP(S) and FTP go through pooch (streaming, progress bar, retries, hashing, temporary file
renamed after the hash matches). `file://` URLs and plain paths are copied through the same
temporary-name-then-rename path, hashed with pooch's own hasher. Before the rename the archive's
members are checked too (no links, devices or paths outside its folder), so a hostile archive
with a matching checksum is refused here and never reaches `dest`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

import pooch

from cnnlab.atomic import clear_leftovers, usual_permissions
from cnnlab.data.cifar import check_members
from cnnlab.errors import UserError

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
OFFICIAL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


# The data URL with its secrets, handed to the download job in the environment it inherits: never a
# rule's parameter, a config value or a command line, which Snakemake records and prints.
SECRET_URL_VARIABLE = "CNNLAB_DATA_URL"


def public_url(url: str) -> str:
    """The URL as a record, a message or a log may show it: without a user name and password, and without
    a query or fragment (a pre-signed URL's signature, a token)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def has_secrets(url: str) -> bool:
    return public_url(url) != url


def url_to_fetch(public: str) -> str:
    """The URL the download job fetches: the one with its secrets from the environment when it is the
    same address as `public` (the rule's parameter), else `public` itself."""
    secret = os.environ.get(SECRET_URL_VARIABLE, "")
    return secret if secret and public_url(secret) == public else public


def fetch_archive(url: str, md5: str, dest: str | Path, retries: int = 3, timeout_s: int = 60) -> Path:
    """Download (or copy) `url` to `dest` if its MD5 equals `md5`; leave nothing at `dest` otherwise."""
    dest = Path(dest)
    md5 = md5.strip().lower()
    if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
        raise UserError(f"data_md5 '{md5}' is not an MD5 checksum; give the 32 hex digits published with the archive.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(dest.parent, [dest.name])  # what a killed download left
    scheme = urlparse(url).scheme
    if scheme in ("http", "https", "ftp", "sftp"):
        # pooch logs each URL it fetches, signature and all: only its warnings are let through.
        pooch_log = pooch.get_logger()
        level = pooch_log.level
        pooch_log.setLevel(logging.WARNING)
        try:
            _fetch_remote(url, md5, dest, retries, timeout_s)
        finally:
            pooch_log.setLevel(level)
    else:
        _copy_local(url, md5, dest)
    log.info("archive %s verified (md5 %s)", dest, md5)
    return dest


def _fetch_remote(url: str, md5: str, dest: Path, retries: int, timeout_s: int) -> None:
    # Fetch into a private folder first: pooch renames into it only after the hash matched, and
    # we move the file to `dest` only after pooch returned, so `dest` never holds a partial file.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        registry = pooch.create(
            path=tmp,
            base_url="",
            registry={dest.name: f"md5:{md5}"},
            urls={dest.name: url},
            retry_if_failed=retries,
        )
        # pooch refuses progressbar=True without tqdm; the download works the same without a bar.
        downloader = pooch.HTTPDownloader(progressbar=_has_tqdm(), timeout=timeout_s)
        try:
            got = registry.fetch(dest.name, downloader=downloader)
        except ValueError as e:
            if "hash" in str(e).lower():
                raise UserError(_mismatch_message(url, md5, _actual_md5(str(e)))) from None
            raise
        except Exception as e:  # requests' many connection errors, after pooch's retries
            detail = str(e).replace(url, public_url(url))  # the error may quote the URL with its secrets
            raise UserError(
                f"Could not download {public_url(url)} after {retries + 1} tries ({type(e).__name__}: {detail}); "
                "check the URL and the network, or pass a local copy with data_url=file:///path."
            ) from None
        _check_members(got, url)
        usual_permissions(got)
        os.replace(got, dest)


def _copy_local(url: str, md5: str, dest: Path) -> None:
    src = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
    if not src.is_file():
        raise UserError(f"The data archive {src} does not exist; check data_url (a URL, file:// URL or path).")
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        shutil.copyfile(src, tmp_path)
        actual = pooch.file_hash(str(tmp_path), alg="md5")
        if actual != md5:
            raise UserError(_mismatch_message(url, md5, actual))
        _check_members(tmp_path, url)
        usual_permissions(tmp_path)
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _mismatch_message(url: str, expected: str, actual: str) -> str:
    return (
        f"The archive from {public_url(url)} has MD5 {actual} but {expected} was expected; the file was removed. "
        "Download it again, or if you use a mirror pass its own checksum with data_md5=..."
    )


def _actual_md5(pooch_message: str) -> str:
    # pooch: "MD5 hash of downloaded file (...) does not match the known hash: expected md5:X but got Y. Deleted ..."
    found = re.search(r"but got ([0-9a-fA-F]+)", pooch_message)
    return found.group(1) if found else "unknown"


def _check_members(path: str | Path, url: str) -> None:
    """Refuse (as a UserError naming the member) an archive whose checksum matched but whose layout is hostile."""
    shown = public_url(url)
    try:
        with tarfile.open(path, "r:gz") as tar:
            check_members(tar, shown)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"The archive from {shown} is not a readable .tar.gz ({e}); check data_url.") from None


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
