"""A full disk or a read-only results folder: one clear sentence, nothing half-written."""

import subprocess

import pytest

from tests.helpers import require, run, train_cmd


@pytest.fixture
def mounted(tmp_path):
    """Mount a small tmpfs (options given per test); outside CI, skip where mounting is not allowed."""
    mounts = []

    def mount(name: str, options: str):
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        require(proc.returncode == 0, f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        # Lazy: a file the test process still holds open (MLflow's pooled SQLite connection) would
        # make a plain umount fail as busy and leave the mount behind.
        subprocess.run(["umount", "--lazy", str(point)], check=False)


def test_a_full_disk_names_the_file_and_leaves_no_partial_checkpoint(tmp_path, arrays, mounted):
    full = mounted("full", "size=200k")
    proc = run(train_cmd("model=cnn", "tracking=none", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"run.dir={full / 'run'}"), cwd=tmp_path)
    assert proc.returncode == 4
    assert "no space left on the device; free some space" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list((full / "run" / "checkpoints").iterdir()) == []  # the temporary file was removed


def test_a_read_only_results_folder_is_one_clear_sentence(tmp_path, arrays, mounted):
    ro = mounted("ro", "ro,size=64k")
    proc = run(train_cmd("model=mlp", "tracking=none", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"run.dir={ro / 'run'}"), cwd=tmp_path)
    assert proc.returncode == 4
    assert f"Cannot write {ro / 'run'}: the file system is read-only" in proc.stderr
    assert "Traceback" not in proc.stderr
