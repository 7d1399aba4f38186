"""read_archive: the official layout is parsed; anything else is one UserError naming the culprit."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from cnnlab.data.cifar import RECORD_BYTES, read_archive
from cnnlab.errors import UserError
from tests.tiny_cifar import CLASSES, make_records, write_tiny_archive

BATCH = "cifar-10-batches-bin/data_batch_3.bin"


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_tiny_archive_is_parsed_in_the_official_layout(tmp_path):
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=20, n_test=7)
    data = read_archive(tmp_path / "a.tar.gz", train_records=100, test_records=7)
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (7, 3, 32, 32) and data.y_test.shape == (7,)
    assert data.classes == tuple(CLASSES)
    # record 0 of data_batch_1: label byte, then the red plane row by row
    rec = np.frombuffer(make_records(20, 1), dtype=np.uint8).reshape(20, RECORD_BYTES)
    assert data.y_train[0] == rec[0, 0]
    assert np.array_equal(data.x_train[0, 0, 0], rec[0, 1:33])
    assert np.array_equal(data.x_train[0, 2].ravel(), rec[0, 1 + 2048 :])


def _member(name, kind, **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in fields.items():
        setattr(info, k, v)
    return info


HOSTILE = {
    "dotdot": {"members": {"cifar-10-batches-bin/../../escaped.bin": b"x" * 10}},
    "absolute": {"members": {"/tmp/cnnlab-absolute.bin": b"x" * 10}},
    "symlink": {"specials": [_member("cifar-10-batches-bin/link", tarfile.SYMTYPE, linkname="/etc/passwd")]},
    "hardlink": {"specials": [_member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, linkname="/etc/passwd")]},
    "chardev": {"specials": [_member("cifar-10-batches-bin/dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]},
    "fifo": {"specials": [_member("cifar-10-batches-bin/pipe", tarfile.FIFOTYPE)]},
}
HOSTILE_NAME = {
    "dotdot": "../../escaped.bin",
    "absolute": "/tmp/cnnlab-absolute.bin",
    "symlink": "cifar-10-batches-bin/link",
    "hardlink": "cifar-10-batches-bin/hard",
    "chardev": "cifar-10-batches-bin/dev",
    "fifo": "cifar-10-batches-bin/pipe",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_member_is_refused_by_name_and_nothing_is_written(tmp_path, monkeypatch, kind):
    archive = tmp_path / "work" / "a.tar.gz"
    archive.parent.mkdir()
    write_tiny_archive(archive, n_per_batch=10, **HOSTILE[kind])
    monkeypatch.chdir(archive.parent)
    before = tree(tmp_path)
    with pytest.raises(UserError, match="Refusing archive") as err:
        read_archive(archive, 50, 10)
    assert HOSTILE_NAME[kind] in str(err.value)
    assert tree(tmp_path) == before


def test_record_size_that_is_not_3073_bytes_is_refused(tmp_path):
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10, members={BATCH: make_records(10, 3)[:-1]})
    with pytest.raises(UserError, match=f"data_batch_3.bin is {10 * RECORD_BYTES - 1} bytes"):
        read_archive(tmp_path / "a.tar.gz", 50, 10)


def test_missing_batch_file_is_named(tmp_path):
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10, members={BATCH: None})
    with pytest.raises(UserError, match="no cifar-10-batches-bin/data_batch_3.bin"):
        read_archive(tmp_path / "a.tar.gz", 40, 10)


@pytest.mark.parametrize(
    ("train", "test", "message"), [(60, 10, "50 training records; 60"), (50, 11, "10 test records; 11")]
)
def test_record_count_must_match_what_is_expected(tmp_path, train, test, message):
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10)
    with pytest.raises(UserError, match=message):
        read_archive(tmp_path / "a.tar.gz", train, test)


def test_label_above_nine_is_refused(tmp_path):
    rec = bytearray(make_records(10, 3))
    rec[5 * RECORD_BYTES] = 10  # the label byte of record 5
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10, members={BATCH: bytes(rec)})
    with pytest.raises(UserError, match="data_batch_3.bin holds label 10"):
        read_archive(tmp_path / "a.tar.gz", 50, 10)


def test_meta_with_nine_class_names_is_refused(tmp_path):
    meta = ("\n".join(CLASSES[:9]) + "\n").encode()
    write_tiny_archive(tmp_path / "a.tar.gz", n_per_batch=10, members={"cifar-10-batches-bin/batches.meta.txt": meta})
    with pytest.raises(UserError, match="batches.meta.txt .* names 9 classes"):
        read_archive(tmp_path / "a.tar.gz", 50, 10)


def test_truncated_gzip_is_named_and_explained(tmp_path):
    path = tmp_path / "a.tar.gz"
    write_tiny_archive(path, n_per_batch=10)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(UserError, match="truncated") as err:
        read_archive(path, 50, 10)
    assert str(path) in str(err.value) and "download it again" in str(err.value)


def test_a_file_that_is_not_gzip_is_named(tmp_path):
    path = tmp_path / "a.tar.gz"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(UserError, match=str(path)):
        read_archive(path, 50, 10)


def test_missing_archive_says_so(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_archive(tmp_path / "nowhere.tar.gz")
