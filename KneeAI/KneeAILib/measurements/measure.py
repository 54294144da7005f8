"""Measure a whole knee: frame, per-plate thickness maps, subregions and the table of numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .denuded import enclosed_uncovered
from .errors import CartilageNotOnBoneError, NoCartilageError
from .frame import (FEMORAL_CARTILAGE, FEMUR, LATERAL_TIBIAL, MEDIAL_TIBIAL, PATELLA, PATELLAR_CARTILAGE,
                    TIBIA, TIBIAL_CARTILAGE_UNSPLIT, KneeFrame, _points, knee_frame)
from .labelmap import LabelMap
from .regional_stats import region_row
from .subregions import SubregionRule, distal_femur_centre, tibial_ap_extent
from .thickness import PlateThickness, plate_thickness

CARTILAGE_VALUES = (FEMORAL_CARTILAGE, MEDIAL_TIBIAL, LATERAL_TIBIAL, PATELLAR_CARTILAGE, TIBIAL_CARTILAGE_UNSPLIT)
PLATES = ("femoral_cartilage", "medial_tibial_cartilage", "lateral_tibial_cartilage", "patellar_cartilage")
BONE_OF = {"femoral_cartilage": ("femur", FEMUR), "medial_tibial_cartilage": ("tibia", TIBIA),
           "lateral_tibial_cartilage": ("tibia", TIBIA), "patellar_cartilage": ("patella", PATELLA)}


@dataclass
class PlateResult:
    thickness: PlateThickness
    rule: SubregionRule
    denuded: np.ndarray  # bool per bone-surface vertex
    region: np.ndarray  # subregion name per vertex ("" outside the plate's tAB and thin cartilage)

    @property
    def in_plate(self) -> np.ndarray:
        return self.thickness.covered | self.denuded


@dataclass
class KneeMeasurement:
    frame: KneeFrame
    plates: dict[str, PlateResult]
    rows: list[dict]
    spacing: tuple[float, float, float]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, structure: str, region: str = "all") -> dict:
        for r in self.rows:
            if r["structure"] == structure and r["region"] == region:
                return r
        raise KeyError(f"No row for {structure}/{region}")

    def to_dict(self) -> dict:
        return {"units": {"length": "mm", "area": "mm^2", "volume": "mm^3",
                          "coordinates": "patient LPS (as SimpleITK/DICOM), mm"},
                "knee_side": self.frame.side, "frame": self.frame.to_dict(),
                "input_spacing_mm": list(self.spacing), "warnings": list(self.warnings),
                "seconds": self.seconds, "regions": self.rows}


def measure_knee(labels: LabelMap, *, side: str | None = None, working_spacing: float = 0.25) -> KneeMeasurement:
    """All measurements of one knee label map (schema values). ``side``: 'right'/'left', or None to
    detect it from the anatomy."""
    start = time.perf_counter()
    present = set(np.unique(labels.array).tolist())
    if not present & set(CARTILAGE_VALUES):
        raise NoCartilageError(
            "The label map has no cartilage (femoral, tibial or patellar): there is nothing to measure. "
            "Check the label convention (--convention) or that the segmentation includes cartilage."
        )
    frame, medial_tibial = knee_frame(labels, side)
    tibial = np.isin(labels.array, (MEDIAL_TIBIAL, LATERAL_TIBIAL, TIBIAL_CARTILAGE_UNSPLIT))
    masks = {
        "femoral_cartilage": labels.array == FEMORAL_CARTILAGE,
        "medial_tibial_cartilage": tibial & medial_tibial,
        "lateral_tibial_cartilage": tibial & ~medial_tibial,
        "patellar_cartilage": labels.array == PATELLAR_CARTILAGE,
    }
    femur_centre = distal_femur_centre(_points(labels, (FEMUR,)), frame)
    plate_extent = tibial_ap_extent(frame, labels.physical_points(np.argwhere(masks["medial_tibial_cartilage"])),
                                    labels.physical_points(np.argwhere(masks["lateral_tibial_cartilage"])))
    plates, rows, warnings = {}, [], []
    for name in PLATES:
        if not masks[name].any():
            warnings.append(f"{name} is not in the label map: not measured")
            continue
        bone, bone_value = BONE_OF[name]
        pt = plate_thickness(labels, 0, bone_value, structure=name, bone=bone, working_spacing=working_spacing,
                             cartilage_mask=masks[name])
        # bone under too-thin-to-measure cartilage is not bare: it neither counts as denuded nor
        # lets a bare patch through it
        denuded = enclosed_uncovered(pt.triangles, pt.covered | pt.thin_cartilage, pt.at_crop_edge, pt.area)
        in_plate = pt.covered | denuded
        labelled = in_plate | pt.thin_cartilage  # every bone point under this plate's cartilage
        if not labelled.any():
            raise CartilageNotOnBoneError(f"{name} lies on none of the {bone}'s surface: nothing to measure")
        rule = SubregionRule(name, frame, pt.vertices[labelled], pt.area[labelled], femur_centre, plate_extent,
                             pt.cartilage_points)
        region = np.full(len(pt.vertices), "", dtype="<U4")
        region[labelled] = rule.assign(pt.vertices[labelled])
        voxel_region = rule.assign(pt.cartilage_points)
        plates[name] = PlateResult(pt, rule, denuded, region)
        rows.append(region_row(name, "all", volume=len(pt.cartilage_points) * pt.voxel_volume, area=pt.area,
                               thickness=pt.thickness, covered=pt.covered, denuded=denuded,
                               thin=pt.thin_cartilage))
        for sub in rule.names():
            sel = region == sub
            rows.append(region_row(name, sub, volume=float((voxel_region == sub).sum()) * pt.voxel_volume,
                                   area=pt.area[sel], thickness=pt.thickness[sel], covered=pt.covered[sel],
                                   denuded=denuded[sel], thin=pt.thin_cartilage[sel]))
    return KneeMeasurement(frame=frame, plates=plates, rows=rows, spacing=tuple(labels.spacing),
                           warnings=warnings, seconds=time.perf_counter() - start)
