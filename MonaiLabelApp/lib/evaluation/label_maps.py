"""A folder of knee label maps: which files are knees, their ids, reading them in schema values, and
an optional working resolution.

Any label file SimpleITK reads (NIfTI, NRRD, MetaImage) directly in the folder is one knee; its id is
the file name without suffix, with characters other than letters, digits, '.', '_' and '-' replaced
by '_' (the id becomes part of datastore image ids, which the server restricts to those).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lib.synthesis import load_label_map

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SCHEMA_CONVENTION = "schema"  # the file already holds knee schema values


def knee_id(path: str | Path) -> str:
    name = Path(path).name
    for suffix in LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or "knee"


def find_label_maps(folder: str | Path) -> dict[str, Path]:
    """knee id -> label file, for every label file directly in ``folder`` (sorted by id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"label folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(LABEL_SUFFIXES) and not path.name.startswith("."):
            knee = knee_id(path)
            if knee in found:
                raise ValueError(f"two label files give the same knee id {knee!r}: {found[knee].name}, {path.name}")
            found[knee] = path
    if not found:
        raise FileNotFoundError(f"no label maps ({', '.join(LABEL_SUFFIXES)}) in {folder}")
    return dict(sorted(found.items()))


def read_knee_labels(path: str | Path, convention: str) -> sitk.Image:
    """The label map in schema values (uint8, the file's geometry); ``convention`` is a schema mapping
    name (e.g. "oai_zib") or "schema"."""
    return load_label_map(path, None if convention == SCHEMA_CONVENTION else convention)


def resample_labels(labels: sitk.Image, spacing_mm: float) -> sitk.Image:
    """The label map on an isotropic grid of ``spacing_mm`` covering the same field of view, with the
    same orientation (so sagittal stays sagittal). Nearest neighbour: on these maps it agrees with
    ITK's label-Gaussian interpolation to within 0.3 % of voxels per structure at 0.6 mm, ~100 times
    faster. ``spacing_mm`` <= 0 returns the map unchanged."""
    if spacing_mm <= 0:
        return labels
    spacing = np.asarray(labels.GetSpacing(), dtype=float)
    extent = np.asarray(labels.GetSize()) * spacing
    size = [max(1, int(np.ceil(e / spacing_mm))) for e in extent]
    # Align the outer voxel edges: the first new voxel centre lies half a new voxel inside the old edge.
    first_centre = labels.TransformContinuousIndexToPhysicalPoint(
        [float(-0.5 + spacing_mm / (2 * s)) for s in spacing]
    )
    return sitk.Resample(labels, size, sitk.Transform(), sitk.sitkNearestNeighbor, first_centre,
                         (float(spacing_mm),) * 3, labels.GetDirection(), 0, sitk.sitkUInt8)
