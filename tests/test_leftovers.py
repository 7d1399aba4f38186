"""What a killed process leaves behind is cleared when the next one starts, and a finished file is on
disk before its name is."""

from __future__ import annotations

import json
import os

import pytest

from cnnlab.atomic import write_text
from cnnlab.training.rundir import RunDir
from cnnlab.training.train import train
from tests.helpers import tiny_prepared, tiny_run_config


def test_a_written_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    # A power loss must leave the old file or the whole new one, never an empty file under the name:
    # the bytes reach the disk before the rename, and the rename (the folder's entry) after it.
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    target = tmp_path / "result.json"
    write_text(target, '{"test_acc": 0.5}\n')
    assert json.loads(target.read_text()) == {"test_acc": 0.5}
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".result.json.")) and synced[1] == str(tmp_path)


def test_a_run_clears_what_a_killed_job_left_and_keeps_the_newest_checkpoints_set_aside(tmp_path):
    arrays = tiny_prepared(tmp_path / "data")
    cfg = tiny_run_config(tmp_path, arrays, "run", "trainer.max_epochs=1", "tracking=none")
    folder = RunDir(cfg.run.dir)
    folder.path.mkdir(parents=True)
    left = [folder.path / ".result.json.k1ll3d", folder.path / ".state.json.x", folder.path / ".config.yaml.y"]
    for path in left:
        path.write_text("half")
    for stamp in ("20261201-000000", "20261202-000000", "20261203-000000"):
        (folder.path / f"checkpoints.stale-{stamp}").mkdir()
    folder.checkpoints.mkdir()
    for stamp in ("20261201-000000", "20261202-000000"):
        (folder.checkpoints / f"last.ckpt.damaged-{stamp}").write_text("cut short")
    result = train(cfg)
    assert result["status"] == "FINISHED"
    assert not any(p.exists() for p in left)
    assert sorted(p.name for p in folder.path.glob("checkpoints.stale-*")) == ["checkpoints.stale-20261203-000000"]
    assert [p.name for p in folder.checkpoints.glob("last.ckpt.damaged-*")] == ["last.ckpt.damaged-20261202-000000"]


@pytest.mark.parametrize("leftover", [".cifar-10-binary.tar.gz.abc123", ".download-xyz"])
def test_a_download_clears_what_a_killed_download_left(tmp_path, leftover):
    from cnnlab.data.download import fetch_archive
    from tests.tiny_cifar import write_tiny_archive

    md5 = write_tiny_archive(tmp_path / "src.tar.gz", 20)
    dest = tmp_path / "resources" / "cifar-10-binary.tar.gz"
    dest.parent.mkdir()
    path = dest.parent / leftover
    path.mkdir() if leftover.startswith(".download") else path.write_text("half")
    fetch_archive(str(tmp_path / "src.tar.gz"), md5, dest)
    assert dest.is_file() and not path.exists()
