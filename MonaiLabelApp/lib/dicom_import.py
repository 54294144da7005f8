"""Turns DICOM series folders in a studies folder into one NIfTI volume per echo.

MONAI Label's local datastore lists image files; a knee study often arrives as a DICOM folder, and a
multi-echo series holds all echoes in one series. Each echo becomes ``<folder>_echo<k>.nii.gz``
(``<folder>.nii.gz`` for a single echo) with pixels and geometry only: no DICOM header is copied.
Idempotent: existing volumes are left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib.transforms.image_io import InputError, pixels_only, read_dicom_echoes, write_atomically

logger = logging.getLogger(__name__)


def import_dicom_folders(studies: str | Path) -> list[Path]:
    studies = Path(studies)
    written = []
    for folder in sorted(p for p in studies.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in ("labels", "model"):
            continue
        if any(studies.glob(f"{folder.name}*.nii.gz")):
            continue
        try:
            echoes = read_dicom_echoes(folder)
        except InputError as e:
            logger.info(f"Studies folder {folder.name}/ not imported: {e}")  # not DICOM, or a series ITK cannot read
            continue
        for k, (te, volume) in enumerate(echoes, start=1):
            name = f"{folder.name}.nii.gz" if len(echoes) == 1 else f"{folder.name}_echo{k}.nii.gz"
            write_atomically(pixels_only(volume), studies / name)
            written.append(studies / name)
            logger.info(f"Imported DICOM {folder.name} echo {k} (TE {te:g} ms) -> {name}")
    return written
