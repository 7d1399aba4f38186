"""The data rules through the real `snakemake` command: a good archive is prepared, a bad one leaves nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from tests.tiny_cifar import write_tiny_archive

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/data/cifar10.npz"


def snakemake(workdir: Path, url: str, md5: str) -> subprocess.CompletedProcess:
    config = [f"data_url={url}", f"data_md5={md5}", "train_records=500", "test_records=100", "val_size=100",
              "study=smoke"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--config", *config, "--", TARGET]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def left_behind(workdir: Path) -> list[str]:
    found = list(workdir.glob("resources/*")) + list(workdir.glob("resources/.*"))
    found += list(workdir.glob("results/data/*")) + list(workdir.glob("results/data/.*"))
    return sorted(str(p.relative_to(workdir)) for p in found)


def logs(workdir: Path, run: subprocess.CompletedProcess) -> str:
    return run.stderr + "".join(p.read_text() for p in workdir.glob("logs/*.log"))


def test_good_archive_gives_arrays_and_statistics(tmp_path):
    md5 = write_tiny_archive(tmp_path / "tiny.tar.gz")
    run = snakemake(tmp_path / "w", str(tmp_path / "tiny.tar.gz"), md5)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(tmp_path / "w" / TARGET) as z:
        assert z["x_train"].shape == (400, 3, 32, 32) and z["x_val"].shape[0] == 100 and z["x_test"].shape[0] == 100
    assert f'"archive_md5": "{md5}"' in (tmp_path / "w" / "results/data/cifar10.json").read_text()
    assert hashlib.md5((tmp_path / "w" / "resources/cifar-10-binary.tar.gz").read_bytes()).hexdigest() == md5


def test_bad_checksum_fails_with_one_sentence_and_leaves_nothing(tmp_path):
    actual = write_tiny_archive(tmp_path / "tiny.tar.gz")
    run = snakemake(tmp_path / "w", (tmp_path / "tiny.tar.gz").as_uri(), "f" * 32)
    assert run.returncode != 0
    out = logs(tmp_path / "w", run)
    assert f"has MD5 {actual} but {'f' * 32} was expected" in out
    assert "cnnlab: error:" in run.stderr and "Traceback" not in out
    assert left_behind(tmp_path / "w") == []


def test_hostile_archive_fails_with_one_sentence_and_leaves_nothing(tmp_path):
    escape = tarfile.TarInfo("cifar-10-batches-bin/../../../escaped")
    escape.type = tarfile.SYMTYPE
    escape.linkname = "/etc/passwd"
    md5 = write_tiny_archive(tmp_path / "tiny.tar.gz", specials=[escape])
    run = snakemake(tmp_path / "w", str(tmp_path / "tiny.tar.gz"), md5)
    assert run.returncode != 0
    out = logs(tmp_path / "w", run)
    assert "member 'cifar-10-batches-bin/../../../escaped' points outside the archive folder" in out
    assert "Traceback" not in out
    assert left_behind(tmp_path / "w") == []
    assert not (tmp_path / "escaped").exists()

