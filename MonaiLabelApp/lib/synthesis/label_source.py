"""Label maps in, schema-valued label maps out: the "source" side of the synthesis.

``load_label_map`` reads any label file SimpleITK reads (NIfTI, NRRD, ...) written in one of the
conventions the knee schema maps (``Resources/knee_schema.json`` -> ``mappings``, e.g. "oai_zib",
"oai_dess_10class") and returns a uint8 image in schema values with the file's geometry unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from KneeAILib.schema import KneeSchema, SchemaError
from KneeAILib.volume import last_line


@lru_cache(maxsize=1)
def knee_schema() -> KneeSchema:
    """The project's schema, parsed once per process."""
    return KneeSchema.load()


def load_label_map(path: str | Path, convention: str | None = None) -> sitk.Image:
    """Read a label map and translate it into schema values (uint8, same geometry as the file).

    ``convention`` names a mapping in the schema; ``None`` means the file already holds schema values.
    Every error names the file: one that is not a 3D scalar label map, values the convention does not
    know or that are not whole numbers (an MRI given by mistake), and a map with no structure at all
    (it would train as a knee made of background).
    """
    name = Path(path).name
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{name}: not a readable label map ({last_line(e)})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{name}: a knee label map is a 3D image of one value per voxel; this one is "
                         f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} value(s) per voxel")
    array = sitk.GetArrayViewFromImage(image)
    schema = knee_schema()
    try:
        if convention is None:
            schema.check_label_values(array)
            mapped = array.astype(np.uint8)
        else:
            mapped = schema.map_from(convention, array)
    except SchemaError as e:
        raise SchemaError(f"{name}: {e}") from None
    if not mapped.any():
        raise ValueError(f"{name}: no labelled structure (every voxel is background)")
    out = sitk.GetImageFromArray(mapped)
    out.CopyInformation(image)
    return out


def tissue_kind_by_value() -> dict[int, str]:
    """Schema value -> structure kind ("bone", "cartilage", "meniscus"); groups take their members'."""
    schema = knee_schema()
    kinds = {s.value: s.kind for s in schema.structures}
    for group in schema.groups:
        member_kinds = {schema.by_key[m].kind for m in group.members}
        if len(member_kinds) == 1:
            kinds[group.value] = member_kinds.pop()
    return kinds
