"""Files replaced whole or not at all: written under a temporary name, then renamed into place.

One implementation for the module, the command line, the measurements and the server (labels, images,
model versions, records, pictures). The temporary name is unique, so concurrent writers never share
one, and the file is created like any new file, so it gets the user's usual permissions (umask):
``tempfile.mkstemp`` makes files readable by their owner only, and a label, image or model renamed
from one stayed so in a lab's shared folder. The data reach the disk before the rename, and the
rename before the function returns: a rename alone is atomic against a crash of the program, not
against a power cut, after which some file systems show the new name over an empty file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def replace_atomically(destination: str | Path, write: Callable[[Path], None], folder: str | Path | None = None,
                     prefix: str = ".tmp-") -> Path:
    """Calls ``write(temporary_path)``, then renames the file to ``destination``; on any failure the
    temporary file is removed and ``destination`` is as it was. The temporary file lives in ``folder``
    (default: beside ``destination``; it must be on the same file system) and keeps the destination's
    suffix, from which writers such as SimpleITK and torch pick the format."""
    destination = Path(destination)
    folder = Path(folder) if folder is not None else destination.parent
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if destination.name.endswith(".nii.gz") else destination.suffix
    temporary = folder / f"{prefix}{uuid.uuid4().hex}{suffix}"
    try:
        write(temporary)
        _flush_file(temporary)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _flush_folder(destination.parent)
    return destination


def _flush_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)  # Windows flushes only a file opened for writing
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _flush_folder(folder: Path) -> None:
    """Makes the rename itself durable. Windows cannot open a folder; NTFS journals renames."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomically(destination: str | Path, data: bytes) -> Path:
    return replace_atomically(destination, lambda temporary: temporary.write_bytes(data))


def write_text_atomically(destination: str | Path, text: str, prefix: str = ".tmp-") -> Path:
    return replace_atomically(destination, lambda temporary: temporary.write_text(text, encoding="utf-8"),
                              prefix=prefix)
