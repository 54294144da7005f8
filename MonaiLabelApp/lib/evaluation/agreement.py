"""Agreement of two predictions of the same knee, for real MRIs without labels.

DESS echo 1 and echo 2 are acquired in one session on one grid: same anatomy, different contrast. A
model that segments anatomy (not contrast) predicts the same structures on both, so the per-structure
Dice between its two predictions is a label-free consistency check (1.0 = identical; it says nothing
about whether both are right). Unlike ``summary``, a structure present in only one prediction is a
disagreement and counts as Dice 0; only a structure absent from both is left out.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lib.evaluation.metrics import EMPTY_BOTH, score_label_maps
from lib.transforms.image_io import same_geometry


def prediction_agreement(first: sitk.Image, second: sitk.Image, schema) -> dict[str, dict]:
    """structure key -> {dice, hd95_mm, asd_mm, volume_first_ml, volume_second_ml, status}.

    ``second`` is resampled (nearest neighbour) onto ``first``'s grid when the grids differ."""
    if not same_geometry(first, second):
        second = sitk.Resample(second, first, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    else:
        # Within same_geometry's tolerance (header rounding of two files of one series) the grids are
        # one: say so exactly, or score_label_maps' stricter check refuses them after both segmentations.
        second = sitk.Image(second)
        second.CopyInformation(first)
    scores = score_label_maps(first, second, schema=schema)
    voxel_ml = float(np.prod(first.GetSpacing())) / 1000.0
    a, b = sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(second)
    members = schema.group_members()
    result = {}
    for key, score in scores.items():
        value = schema.value_of(key)
        # A group's volume counts its members and the group value itself, as its Dice does.
        values = members[value] + [value] if value in members else [value]
        row = score.to_dict()
        row.pop("key")
        row["volume_first_ml"] = round(int(np.isin(a, values).sum()) * voxel_ml, 3)
        row["volume_second_ml"] = round(int(np.isin(b, values).sum()) * voxel_ml, 3)
        result[key] = row
    return result


def agreement_markdown(agreement: dict[str, dict], names: dict[str, str], first: str = "echo 1",
                       second: str = "echo 2") -> str:
    lines = [
        f"| Structure | Dice ({first} vs {second}) | HD95 (mm) | ASD (mm) | volume {first} (mL) | volume {second} (mL) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def fmt(value, digits):
        return "–" if value is None else f"{value:.{digits}f}"

    for key, row in agreement.items():
        if row["status"] == EMPTY_BOTH:
            lines.append(f"| {names.get(key, key)} | absent from both | | | 0 | 0 |")
            continue
        lines.append(
            f"| {names.get(key, key)} | {fmt(row['dice'], 3)} | {fmt(row['hd95_mm'], 2)} | {fmt(row['asd_mm'], 2)} | "
            f"{row['volume_first_ml']:.2f} | {row['volume_second_ml']:.2f} |"
        )
    return "\n".join(lines)


def mean_agreement_dice(agreement: dict[str, dict], keys: list[str]) -> float | None:
    """Mean Dice over ``keys`` present in at least one prediction (None when none is)."""
    values = [agreement[k]["dice"] for k in keys if k in agreement and agreement[k]["status"] != EMPTY_BOTH]
    return round(float(np.mean(values)), 4) if values else None
