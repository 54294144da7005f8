"""Turns DICOM series folders in a studies folder into one NIfTI volume per echo.

MONAI Label's local datastore lists image files; a knee study often arrives as a DICOM folder, and a
multi-echo series holds all echoes in one series. Each echo becomes ``<folder>_echo<k>.nii.gz``
(``<folder>.nii.gz`` for a single echo) with pixels and geometry only: no DICOM header is copied.
Idempotent: existing volumes are left alone. A folder name with characters an image id may not hold
(spaces, brackets: PACS exports have them) has them replaced by "_": the image would be listed, handed
out to annotators and then refused by every request naming it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lib.transforms.image_io import InputError, pixels_only, read_dicom_echoes, write_atomically

logger = logging.getLogger(__name__)


def image_name(folder_name: str) -> str:
    """The folder's name as an image id (lib.datastore.check_id): letters, digits, '.', '_', '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", folder_name)
    return name if name[:1].isalnum() else f"dicom_{name}"


def import_dicom_folders(studies: str | Path) -> list[Path]:
    studies = Path(studies)
    written = []
    for folder in sorted(p for p in studies.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in ("labels", "model"):
            continue
        base = image_name(folder.name)
        # Exactly this folder's volumes: a prefix pattern also matched another study's (knee1 was never
        # imported beside knee10.nii.gz), and glob characters in a name ("[") matched nothing.
        if (studies / f"{base}.nii.gz").exists() or (studies / f"{base}_echo1.nii.gz").exists():
            continue
        try:
            echoes = read_dicom_echoes(folder)
        except InputError as e:
            logger.info(f"Studies folder {folder.name}/ not imported: {e}")  # not DICOM, or a series ITK cannot read
            continue
        for k, (te, volume) in enumerate(echoes, start=1):
            name = f"{base}.nii.gz" if len(echoes) == 1 else f"{base}_echo{k}.nii.gz"
            write_atomically(pixels_only(volume), studies / name)
            written.append(studies / name)
            logger.info(f"Imported DICOM {folder.name} echo {k} (TE {te:g} ms) -> {name}")
    return written
