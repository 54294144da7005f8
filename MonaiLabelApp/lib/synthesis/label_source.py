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
from KneeAILib.schema import KneeSchema


@lru_cache(maxsize=1)
def knee_schema() -> KneeSchema:
    """The project's schema, parsed once per process."""
    return KneeSchema.load()


def load_label_map(path: str | Path, convention: str | None = None) -> sitk.Image:
    """Read a label map and translate it into schema values (uint8, same geometry as the file).

    ``convention`` names a mapping in the schema; ``None`` means the file already holds schema values
    (checked: unknown values raise ``SchemaError``).
    """
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path} is not a scalar label map")
    array = sitk.GetArrayViewFromImage(image)
    schema = knee_schema()
    if convention is None:
        schema.check_label_values(array)
        mapped = array.astype(np.uint8)
    else:
        mapped = schema.map_from(convention, array)
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
