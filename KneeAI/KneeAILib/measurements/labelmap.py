"""Load a knee label map and bring it into the KneeAI schema, keeping its full physical geometry.

Everything downstream works in millimetres in the patient (LPS) coordinate system that SimpleITK
reports, so a rotated, shifted or resampled copy of the same knee gives the same measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from KneeAILib.schema import KneeSchema, SchemaError
from KneeAILib.volume import last_line

from .errors import GeometryError, MeasurementError, UnknownLabelError

SCHEMA_CONVENTION = "schema"  # the label map already uses KneeAI schema values
# The surfaces are smoothed in 3D (ITK's recursive Gaussian needs at least 4 voxels along each axis).
MIN_VOXELS_PER_AXIS = 4


@dataclass
class LabelMap:
    """A label map in schema values with its geometry.

    ``array`` is in SimpleITK's array order (k, j, i), i.e. index (i, j, k) of the image is
    ``array[k, j, i]``. ``spacing``/``origin`` are in (i, j, k) order, ``direction`` is the 3x3
    matrix whose columns are the physical directions of the i, j, k axes.
    """

    array: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @classmethod
    def from_image(cls, image: sitk.Image, convention: str = SCHEMA_CONVENTION,
                   schema: KneeSchema | None = None) -> "LabelMap":
        if image.GetDimension() != 3:
            raise GeometryError(f"Knee label maps must be 3D; got a {image.GetDimension()}D image")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise GeometryError("Knee label maps must have one value per voxel (a scalar label image)")
        if min(image.GetSize()) < MIN_VOXELS_PER_AXIS:
            raise GeometryError(
                f"Knee label maps must be 3D volumes; this one is {' x '.join(map(str, image.GetSize()))} voxels, "
                f"fewer than {MIN_VOXELS_PER_AXIS} along an axis (a single slice or a thin slab): cartilage "
                "thickness is measured in 3D, so give the whole segmented volume")
        spacing = np.array(image.GetSpacing(), dtype=float)
        if np.any(spacing <= 0):
            raise GeometryError(f"Voxel spacing must be positive; got {tuple(spacing)}")
        raw = sitk.GetArrayFromImage(image)
        if np.issubdtype(raw.dtype, np.floating):
            if not np.all(np.equal(np.mod(raw, 1), 0)):
                raise UnknownLabelError("Label map holds non-integer values; expected integer labels")
        if raw.min() < 0:
            raise UnknownLabelError(f"Label map holds negative values (min {raw.min()}); expected labels >= 0")
        array = to_schema_values(raw.astype(np.int64, copy=False), convention, schema or KneeSchema.load())
        return cls.on_grid_of(array, image)

    @classmethod
    def on_grid_of(cls, array: np.ndarray, image: sitk.Image) -> "LabelMap":
        """``array`` (schema values, SimpleITK order) with ``image``'s geometry; no checks."""
        return cls(array=array, spacing=np.array(image.GetSpacing(), dtype=float),
                   origin=np.array(image.GetOrigin(), dtype=float),
                   direction=np.array(image.GetDirection(), dtype=float).reshape(3, 3))

    @classmethod
    def read(cls, path: str | Path, convention: str = SCHEMA_CONVENTION,
             schema: KneeSchema | None = None) -> "LabelMap":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Label map not found: {path}")
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise MeasurementError(f"{path.name}: not a readable label map ({last_line(e)})") from None
        return cls.from_image(image, convention, schema)

    def to_image(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array.astype(np.uint8))
        image.SetSpacing(tuple(self.spacing))
        image.SetOrigin(tuple(self.origin))
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @property
    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix taking homogeneous (i, j, k, 1) to physical (x, y, z, 1) in mm (LPS)."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def physical_points(self, array_indices: np.ndarray) -> np.ndarray:
        """Physical mm of points given as (N, 3) continuous array indices (k, j, i)."""
        ijk = np.asarray(array_indices, dtype=float)[:, ::-1]
        return ijk @ (self.direction @ np.diag(self.spacing)).T + self.origin

    @property
    def voxel_volume(self) -> float:
        return float(np.prod(self.spacing))


def to_schema_values(raw: np.ndarray, convention: str, schema: KneeSchema) -> np.ndarray:
    """Map a raw label array into schema values; unknown values raise UnknownLabelError."""
    try:
        if convention == SCHEMA_CONVENTION:
            schema.check_label_values(raw)
            return raw.astype(np.uint8)
        return schema.map_from(convention, raw).astype(np.uint8)
    except SchemaError as e:
        raise UnknownLabelError(
            f"{e}. Choose the label convention the map was made with "
            f"(one of: {SCHEMA_CONVENTION}, {', '.join(sorted(schema.mappings))})."
        ) from e
