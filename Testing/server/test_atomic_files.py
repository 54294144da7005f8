"""Files are replaced whole or not at all, with the usual permissions, also under concurrent writers
(KneeAILib.atomic_files, used by the server's image, label, model and record writers and the client's)."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from KneeAILib.atomic_files import replace_atomically
from KneeAILib.volume import PixelVolume, write_volume_atomically
from lib.model_store import write_json_atomically
from lib.transforms.image_io import write_atomically


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_written_files_get_the_usual_permissions_not_owner_only(tmp_path, umask_022):
    """tempfile.mkstemp's files are 0600: a label or model renamed from one was unreadable to the rest
    of a lab sharing the folder."""
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))
    write_atomically(image, tmp_path / "labels" / "final" / "knee.nii.gz")
    write_volume_atomically(PixelVolume.from_sitk(image), tmp_path / "export.nii.gz")
    write_json_atomically(tmp_path / "model" / "promoted.json", {"version": "v0001"})
    for path in (tmp_path / "labels" / "final" / "knee.nii.gz", tmp_path / "export.nii.gz",
                 tmp_path / "model" / "promoted.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    destination = tmp_path / "record.json"
    destination.write_text("old")

    def half_then_fail(temporary):
        temporary.write_text("ne")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_atomically(destination, half_then_fail)
    assert destination.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_concurrent_image_writers_into_one_folder_all_succeed(tmp_path):
    """Inference results and labels may be written by several threads at once; a shared temporary
    folder removed by one writer made another's write fail (about 3 % of writes with 4 threads)."""
    errors = []

    def writer(index):
        image = sitk.GetImageFromArray(np.full((4, 4, 4), index, np.uint8))
        for n in range(100):
            try:
                write_atomically(image, tmp_path / f"w{index}_{n}.nii.gz")
            except Exception as e:  # collected: the assertion below names them
                errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list(tmp_path.glob("*.nii.gz"))) == 400 and not list(tmp_path.glob(".partial*"))


def test_the_data_and_the_rename_are_flushed_to_disk_in_order(tmp_path, monkeypatch):
    """A power cut cannot be caused here, so the system calls are watched instead (a spy, the real calls
    still run): the new file's data are flushed before its rename, the folder's entry after it. Without
    both, ext4 and XFS may show the new name over an empty file after a power cut."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination):
        calls.append(("replace", str(source), str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    destination = tmp_path / "labels" / "knee.nii.gz"
    replace_atomically(destination, lambda temporary: temporary.write_bytes(b"label"))
    temporary = calls[1][1]
    assert calls == [("fsync", temporary), ("replace", temporary, str(destination)),
                     ("fsync", str(destination.parent))]
    assert destination.read_bytes() == b"label"
