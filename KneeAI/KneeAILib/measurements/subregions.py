"""Cartilage subregions from the knee frame (bone-derived), following the OAI convention in spirit.

Names follow Eckstein/Wirth (M/L = medial/lateral; F/T/P = femur/tibia/patella):
- tibia, per plate (MT, LT): c = central ellipse holding 20 % of the plate's bone area; the rest
  cut by the diagonals of the normalised plate into a (anterior), p (posterior), e (exterior: away
  from the eminence) and i (interior: toward it) - e.g. cMT, aMT, pMT, eMT, iMT.
- femur: TrF (trochlea) is the cartilage more than 60 deg anterior of straight down, seen in the
  sagittal plane from the centre of the distal femur (a rule tied to the trochlear notch itself was
  tried and moved with small shifts of the midline). Each condyle (M or L by the side of the
  intercondylar plane) is cut front to back by the tibial plate beneath it: c (central, the
  weight-bearing surface in extension) lies over the plate's front-to-back extent (2.5-97.5 %),
  a in front of it, p behind it: aMF, cMF, pMF, aLF, cLF, pLF.
- patella: MP / LP, split at the patellar ridge (the most posterior line of its articular surface).
These cut-offs are KneeAI's own definitions (stated so results are reproducible); they approximate,
and do not claim to reproduce, the published subregion boundaries (Wirth & Eckstein 2008).
"""

from __future__ import annotations

import numpy as np

from .frame import KneeFrame

TIBIAL_CENTRAL_FRACTION = 0.20
FEMUR_TROCHLEA_DEG = 60.0

SUBREGIONS = {
    "femoral_cartilage": ["TrF", "aMF", "cMF", "pMF", "aLF", "cLF", "pLF"],
    "medial_tibial_cartilage": ["cMT", "aMT", "pMT", "eMT", "iMT"],
    "lateral_tibial_cartilage": ["cLT", "aLT", "pLT", "eLT", "iLT"],
    "patellar_cartilage": ["MP", "LP"],
}


class SubregionRule:
    """Assigns subregion names to points of one plate; fitted once on the plate's bone surface so
    that the cartilage voxels and the thickness points of the same plate share the same boundaries."""

    def __init__(self, structure: str, frame: KneeFrame, surface_points: np.ndarray,
                 surface_area: np.ndarray, femur_centre: np.ndarray | None = None,
                 tibial_ap_extent: dict[str, tuple[float, float]] | None = None,
                 cartilage_points: np.ndarray | None = None):
        self.structure = structure
        self.frame = frame
        q = frame.coordinates(surface_points)
        if structure in ("medial_tibial_cartilage", "lateral_tibial_cartilage"):
            # Centre and extent from the cartilage's volume: the thin rim, which comes and goes with
            # the voxel grid, moves them far less than it moves an area-weighted surface outline.
            v = frame.coordinates(cartilage_points)[:, :2] if cartilage_points is not None else q[:, :2]
            self.centre = v.mean(axis=0)
            self.half = np.array([np.subtract(*np.percentile(v[:, i], [97.5, 2.5])) / 2 for i in (0, 1)])
            rn = np.linalg.norm((q[:, :2] - self.centre) / self.half, axis=1)
            self.central_radius = _weighted_quantile(rn, surface_area, TIBIAL_CENTRAL_FRACTION)
            self.exterior_sign = 1.0 if structure == "medial_tibial_cartilage" else -1.0
        elif structure == "femoral_cartilage":
            if femur_centre is None or tibial_ap_extent is None:
                raise ValueError("femoral subregions need the distal femur's centre and the tibial plates")
            self.centre = frame.coordinates(femur_centre[None])[0]
            self.tibial_ap_extent = tibial_ap_extent
        elif structure == "patellar_cartilage":
            back = q[:, 1] <= np.percentile(q[:, 1], 10)  # most posterior tenth: the ridge
            self.ridge = float(np.median(q[back, 0]))
        else:
            raise ValueError(f"No subregions defined for {structure}")

    def _sagittal_angle(self, q: np.ndarray) -> np.ndarray:
        """Degrees around the distal femur's centre in the sagittal plane: 0 down, positive anterior."""
        rel = q - self.centre
        return np.rad2deg(np.arctan2(rel[:, 1], -rel[:, 2]))

    def names(self) -> list[str]:
        return SUBREGIONS[self.structure]

    def assign(self, points: np.ndarray) -> np.ndarray:
        """Subregion name (str array) for each (N, 3) mm point."""
        q = self.frame.coordinates(points)
        s = self.structure
        if s.endswith("tibial_cartilage"):
            plate = "MT" if s.startswith("medial") else "LT"
            xy = (q[:, :2] - self.centre) / self.half
            rn = np.linalg.norm(xy, axis=1)
            out = np.where(np.abs(xy[:, 1]) >= np.abs(xy[:, 0]),
                           np.where(xy[:, 1] > 0, "a", "p"),
                           np.where(xy[:, 0] * self.exterior_sign > 0, "e", "i"))
            out = np.where(rn <= self.central_radius, "c", out)
            return np.char.add(out.astype("<U3"), plate)
        if s == "femoral_cartilage":
            angle = self._sagittal_angle(q)
            medial = q[:, 0] > 0
            lo = np.where(medial, self.tibial_ap_extent["M"][0], self.tibial_ap_extent["L"][0])
            hi = np.where(medial, self.tibial_ap_extent["M"][1], self.tibial_ap_extent["L"][1])
            part = np.where(q[:, 1] > hi, "a", np.where(q[:, 1] >= lo, "c", "p"))
            out = np.char.add(part.astype("<U3"), np.where(medial, "MF", "LF"))
            return np.where(angle > FEMUR_TROCHLEA_DEG, "TrF", out)
        return np.where(q[:, 0] > self.ridge, "MP", "LP")


def tibial_ap_extent(frame: KneeFrame, medial_points: np.ndarray,
                     lateral_points: np.ndarray) -> dict[str, tuple[float, float]]:
    """Front-to-back extent (2.5-97.5 %, knee-frame mm) of each tibial plate's cartilage."""
    out = {}
    for key, pts in (("M", medial_points), ("L", lateral_points)):
        if len(pts) == 0:
            raise ValueError(f"{'medial' if key == 'M' else 'lateral'} tibial plate missing: "
                             "femoral subregions are placed over the tibial plates")
        ap = frame.coordinates(pts)[:, 1]
        out[key] = (float(np.percentile(ap, 2.5)), float(np.percentile(ap, 97.5)))
    return out


def distal_femur_centre(femur_points: np.ndarray, frame: KneeFrame) -> np.ndarray:
    """Centre of the distal femur (mm): the centroid of the femur within 30 mm of its lowest point."""
    height = femur_points @ frame.superior
    distal = femur_points[height < height.min() + 30.0]
    return distal.mean(axis=0)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (values * weights[:, None]).sum(axis=0) / weights.sum()


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])
