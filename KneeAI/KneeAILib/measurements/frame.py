"""The knee's own coordinate frame, derived from its bones, and which knee (left or right) it is.

Axes (unit vectors in patient LPS mm):
- superior: from the tibia's centroid to the femur's centroid (the long axis of the leg in the field
  of view);
- medial-lateral line: the major axis of the proximal tibia (the plateau is wider than it is deep),
  orthogonal to superior;
- anterior: orthogonal to both, signed so that the patella lies in front of the femur;
- medial: the medial-lateral line signed by anatomy (see ``detect_side``), so a left knee and its
  mirror-image right knee get the same frame up to the mirror.
The origin is the middle of the tibial plateau: medial-lateral at the gap between the tibial plates
(the intercondylar eminence), anterior-posterior at the plates' centre, superior at the plateau top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import MissingBoneError, NoCartilageError
from .labelmap import LabelMap

FEMUR, TIBIA, PATELLA, FIBULA = 1, 2, 3, 4
FEMORAL_CARTILAGE, MEDIAL_TIBIAL, LATERAL_TIBIAL, PATELLAR_CARTILAGE = 5, 6, 7, 8
MEDIAL_MENISCUS, LATERAL_MENISCUS, TIBIAL_CARTILAGE_UNSPLIT = 9, 10, 20


@dataclass
class KneeFrame:
    origin: np.ndarray
    medial: np.ndarray
    anterior: np.ndarray
    superior: np.ndarray
    side: str  # "right" or "left"
    side_evidence: dict[str, str] = field(default_factory=dict)

    def coordinates(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) mm in the knee frame: columns medial, anterior, superior (medial > 0 is medial)."""
        rel = np.asarray(points, dtype=float) - self.origin
        return np.stack([rel @ self.medial, rel @ self.anterior, rel @ self.superior], axis=1)

    def to_dict(self) -> dict:
        return {"origin_mm_lps": self.origin.tolist(), "medial": self.medial.tolist(),
                "anterior": self.anterior.tolist(), "superior": self.superior.tolist(),
                "side": self.side, "side_evidence": dict(self.side_evidence)}


def _points(labels: LabelMap, values: tuple[int, ...], stride: int = 2) -> np.ndarray:
    """Physical mm of (a regular subsample of) the voxels holding any of ``values``."""
    sub = labels.array[::stride, ::stride, ::stride]
    kji = np.argwhere(np.isin(sub, values)) * stride
    return labels.physical_points(kji)


def knee_frame(labels: LabelMap, side: str | None = None) -> tuple[KneeFrame, np.ndarray]:
    """The knee frame and, per voxel of tibial cartilage, whether it belongs to the medial plate.

    Returns (frame, medial_tibial_mask) where the mask is over the whole array (True = medial plate)
    for the voxels labelled tibial cartilage (split or unsplit).
    """
    femur = _points(labels, (FEMUR,))
    tibia = _points(labels, (TIBIA,))
    if len(femur) == 0 or len(tibia) == 0:
        missing = [n for n, p in (("femur", femur), ("tibia", tibia)) if len(p) == 0]
        raise MissingBoneError(
            f"The knee frame (medial/lateral, anterior/posterior) is built from the bones, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not labelled"
        )
    superior = _unit(femur.mean(axis=0) - tibia.mean(axis=0))
    tibia_top = (tibia @ superior).max()
    plateau = tibia[tibia @ superior > tibia_top - 15.0]
    flat = plateau - plateau.mean(axis=0)
    flat -= np.outer(flat @ superior, superior)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    ml_line = _unit(vt[0] - (vt[0] @ superior) * superior)
    anterior = np.cross(ml_line, superior)
    patella = _points(labels, (PATELLA,))
    femur_centre = femur.mean(axis=0)
    if len(patella):
        front = patella.mean(axis=0) - femur_centre
    else:  # no patella labelled: trust the image header (LPS: anterior is -y)
        front = np.array([0.0, -1.0, 0.0])
    if front @ anterior < 0:
        anterior = -anterior
    # patient_left_like is a fixed-handed axis: for a correctly labelled image it points to patient left
    patient_left_like = np.cross(superior, anterior)

    tibial_cart = np.isin(labels.array, (MEDIAL_TIBIAL, LATERAL_TIBIAL, TIBIAL_CARTILAGE_UNSPLIT))
    if not tibial_cart.any():
        raise NoCartilageError("No tibial cartilage: the knee frame needs the tibial plates to find its centre")
    cart_kji = np.argwhere(tibial_cart)
    cart_mm = labels.physical_points(cart_kji)
    # Refine the medial-lateral line twice: the line through the two plates' centres is steadier
    # than the plateau's principal axis when the tibial shaft in view is short or oblique.
    for _ in range(2):
        lateral_coord = cart_mm @ patient_left_like
        split = _plate_gap(lateral_coord)
        toward_left = lateral_coord > split  # which plate lies toward patient_left_like
        if toward_left.all() or not toward_left.any():
            raise NoCartilageError("Only one tibial plate is labelled: the knee frame needs both")
        between = cart_mm[toward_left].mean(axis=0) - cart_mm[~toward_left].mean(axis=0)
        patient_left_like = _unit(between - (between @ superior) * superior)
        anterior = np.cross(patient_left_like, superior)  # keeps left = superior x anterior
    lateral_coord = cart_mm @ patient_left_like
    split = _plate_gap(lateral_coord)
    toward_left = lateral_coord > split

    medial_is_left, evidence = detect_side(labels, patient_left_like, split, cart_kji, toward_left, superior,
                                           side)
    medial = patient_left_like if medial_is_left else -patient_left_like
    # right knee: medial is toward patient left
    knee_side = "right" if medial_is_left else "left"
    # superior, anterior and patient_left_like are orthonormal, so the origin is the sum of its parts
    origin = split * patient_left_like + (cart_mm @ anterior).mean() * anterior + tibia_top * superior
    frame = KneeFrame(origin=origin, medial=medial, anterior=anterior, superior=superior, side=knee_side,
                      side_evidence=evidence)
    medial_mask = np.zeros(labels.array.shape, dtype=bool)
    in_medial = toward_left if medial_is_left else ~toward_left
    medial_mask[tuple(cart_kji[in_medial].T)] = True
    # labels that are already split keep their own plate
    medial_mask[labels.array == MEDIAL_TIBIAL] = True
    medial_mask[labels.array == LATERAL_TIBIAL] = False
    return frame, medial_mask


def _plate_gap(coord: np.ndarray) -> float:
    """The medial-lateral position of the gap between the two tibial plates (fewest voxels)."""
    lo, hi = np.percentile(coord, [1, 99])
    bins = np.arange(lo, hi + 1.0, 1.0)
    counts, edges = np.histogram(coord, bins=bins)
    counts = np.convolve(counts, np.ones(3) / 3, mode="same")
    centres = (edges[:-1] + edges[1:]) / 2
    middle = (centres > lo + 0.3 * (hi - lo)) & (centres < lo + 0.7 * (hi - lo))
    if not middle.any():
        return float(np.median(coord))
    counts, centres = counts[middle], centres[middle]
    # The gap is often several empty bins wide: take the middle of the widest run of the fewest voxels,
    # not its first bin, so that a mirrored knee gets the mirrored split (argmin alone depends on the
    # direction of the axis and moved the femoral medial/lateral boundary by half the gap).
    edges = np.diff(np.concatenate([[0], (counts <= counts.min() + 1e-9).astype(int), [0]]))
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # runs of the fewest
    middle_bin = (len(counts) - 1) / 2
    widest = max(range(len(firsts)),
                 key=lambda r: (lasts[r] - firsts[r], -abs((firsts[r] + lasts[r]) / 2 - middle_bin)))
    return float((centres[firsts[widest]] + centres[lasts[widest]]) / 2)


def detect_side(labels: LabelMap, patient_left_like: np.ndarray, split: float, cart_kji: np.ndarray,
                toward_left: np.ndarray, superior: np.ndarray,
                side: str | None) -> tuple[bool, dict[str, str]]:
    """Whether the medial compartment lies toward ``patient_left_like`` (i.e. a right knee).

    Evidence, strongest first: a side given by the user; split medial/lateral labels (tibial cartilage
    or menisci); the fibula (lateral); otherwise the tibial plates' shape, from the population anatomy
    of the knee: the lateral tibial cartilage is thicker than the medial one (e.g. Eckstein et al.
    2006), and the medial plateau is longer front to back than the lateral one.
    """
    evidence: dict[str, str] = {}
    if side is not None:
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right', 'left' or None (detect); got {side!r}")
        evidence["user"] = side
        return side == "right", evidence
    for med, lat, name in ((MEDIAL_TIBIAL, LATERAL_TIBIAL, "tibial cartilage labels"),
                           (MEDIAL_MENISCUS, LATERAL_MENISCUS, "meniscus labels")):
        pm, pl = _points(labels, (med,)), _points(labels, (lat,))
        if len(pm) and len(pl):
            medial_left = bool((pm.mean(axis=0) - pl.mean(axis=0)) @ patient_left_like > 0)
            evidence[name] = "right" if medial_left else "left"
            return medial_left, evidence
    fibula = _points(labels, (FIBULA,))
    if len(fibula):
        tibia = _points(labels, (TIBIA,))
        lateral_left = bool((fibula.mean(axis=0) - tibia.mean(axis=0)) @ patient_left_like > 0)
        evidence["fibula"] = "left" if lateral_left else "right"
        return not lateral_left, evidence

    # Plate shape: thickness proxy (volume / footprint) and front-to-back length of each plate.
    cart_mm = labels.physical_points(cart_kji)
    anterior = np.cross(patient_left_like, superior)
    stats = {}
    for name, sel in (("toward_left", toward_left), ("toward_right", ~toward_left)):
        pts = cart_mm[sel]
        if len(pts) < 50:
            raise NoCartilageError("Only one tibial plate is labelled: cannot tell medial from lateral; "
                                   "pass the knee side explicitly")
        ml, ap = pts @ patient_left_like, pts @ anterior
        footprint = len(np.unique(np.stack([np.floor(ml / 0.5), np.floor(ap / 0.5)], axis=1), axis=0)) * 0.25
        volume = len(pts) * labels.voxel_volume
        length = np.subtract(*np.percentile(ap, [97.5, 2.5]))
        stats[name] = (volume / footprint, length)
    # Trochlea: its lateral facet stands further anterior than the medial one.
    femur = _points(labels, (FEMUR,))
    tibia_top = (_points(labels, (TIBIA,)) @ superior).max()
    f_ml, f_ap, f_si = femur @ patient_left_like, femur @ anterior, femur @ superior
    band = (f_si > tibia_top + 15.0) & (f_si < tibia_top + 45.0)
    front = {}
    for name, sign in (("toward_left", 1.0), ("toward_right", -1.0)):
        off = sign * (f_ml - split)
        sel = band & (off > 8.0) & (off < 25.0)
        front[name] = np.percentile(f_ap[sel], 99) if sel.sum() > 20 else np.nan
    thicker_left = stats["toward_left"][0] > stats["toward_right"][0]
    longer_left = stats["toward_left"][1] > stats["toward_right"][1]
    votes = [not thicker_left, longer_left]  # True = medial is toward patient left
    evidence["plate thickness (lateral thicker)"] = "right" if votes[0] else "left"
    evidence["plate length (medial longer)"] = "right" if votes[1] else "left"
    if np.isfinite(front["toward_left"]) and np.isfinite(front["toward_right"]):
        votes.append(bool(front["toward_right"] > front["toward_left"]))  # lateral is the more anterior
        evidence["trochlea (lateral facet higher)"] = "right" if votes[-1] else "left"
    medial_left = sum(votes) * 2 > len(votes)
    return medial_left, evidence


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
