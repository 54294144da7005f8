"""Two visits of the same knee: align each plate's bone, then thickness change per subregion and per
point of the first visit's bone surface.

Each bone is aligned on its own (rigid, SimpleITK: mean squares between the smoothed bone masks,
three resolution levels, moments initialisation) because the knee may be flexed differently at
the two visits: femur, tibia and patella move relative to each other, the shape of each does not.
Regional change uses each visit's own subregions (both come from that visit's anatomy); the change
map maps every visit-1 bone-surface point through the bone's transform to the nearest visit-2 point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import MeasurementError
from .labelmap import LabelMap
from .measure import BONE_OF, KneeMeasurement

CHANGE_COLUMNS = ["structure", "region", "visit1_mean_thickness_tab_mm", "visit2_mean_thickness_tab_mm",
                  "change_mm", "change_percent", "mapped_mean_change_mm", "visit1_volume_mm3",
                  "visit2_volume_mm3"]
MATCH_DISTANCE_MM = 1.5


@dataclass
class VisitComparison:
    rows: list[dict]
    change_maps: dict[str, np.ndarray]  # per plate: change (mm) per visit-1 vertex, NaN where unmatched
    bone_transforms: dict[str, list[float]] = field(default_factory=dict)  # 4x4 visit1 -> visit2, row-major
    plate_transforms: dict[str, list[float]] = field(default_factory=dict)  # refined on each plate's bone
    registration_error_mm: dict[str, float] = field(default_factory=dict)

    def row(self, structure: str, region: str = "all") -> dict:
        for r in self.rows:
            if r["structure"] == structure and r["region"] == region:
                return r
        raise KeyError(f"No change row for {structure}/{region}")

    def to_dict(self) -> dict:
        return {"units": {"change": "mm (visit 2 - visit 1)"}, "regions": self.rows,
                "bone_transforms_visit1_to_visit2_lps": self.bone_transforms,
                "plate_bone_transforms_visit1_to_visit2_lps": self.plate_transforms,
                "bone_surface_distance_after_alignment_mm": self.registration_error_mm}


def compare_visits(labels1: LabelMap, m1: KneeMeasurement, labels2: LabelMap, m2: KneeMeasurement) -> VisitComparison:
    if m1.frame.side != m2.frame.side:
        raise MeasurementError(
            f"The two visits look like different knees (visit 1 {m1.frame.side}, visit 2 {m2.frame.side}); "
            "pass the side explicitly if the detection is wrong")
    transforms: dict[str, np.ndarray] = {}
    errors: dict[str, float] = {}
    change_maps: dict[str, np.ndarray] = {}
    plate_transforms: dict[str, list[float]] = {}
    rows: list[dict] = []
    for name, p1 in m1.plates.items():
        if name not in m2.plates:
            continue
        bone, value = BONE_OF[name]
        if bone not in transforms:
            transforms[bone] = align_bone(labels1, labels2, value)
        p2 = m2.plates[name]
        # Refine on this plate's own bone surface (ICP), which the volume registration only gets to
        # within a fraction of its 1 mm grid; cut faces of the measuring crop are left out.
        matrix = refine_on_surface(p1.thickness.vertices[~p1.thickness.at_crop_edge],
                                   p2.thickness.vertices[~p2.thickness.at_crop_edge], transforms[bone])
        mapped = p1.thickness.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        t2_all = np.where(p2.thickness.covered, p2.thickness.thickness, 0.0)
        nearest = np.zeros(len(mapped), dtype=np.int64)
        dist = np.full(len(mapped), np.inf)
        nearest[p1.in_plate], dist[p1.in_plate] = nearest_points(p2.thickness.vertices, mapped[p1.in_plate],
                                                                 cell_mm=0.3)
        errors[name] = float(np.median(dist[p1.in_plate]))
        t1 = np.where(p1.thickness.covered, p1.thickness.thickness, 0.0)
        change = np.where(p1.in_plate & p2.in_plate[nearest] & (dist <= MATCH_DISTANCE_MM),
                          t2_all[nearest] - t1, np.nan)
        change_maps[name] = change
        plate_transforms[name] = matrix.ravel().tolist()
        for r1 in (r for r in m1.rows if r["structure"] == name):
            r2 = m2.row(name, r1["region"])
            sel = (p1.region == r1["region"]) if r1["region"] != "all" else p1.in_plate
            a, b = r1["mean_thickness_tab_mm"], r2["mean_thickness_tab_mm"]
            w = p1.thickness.area[sel & np.isfinite(change)]
            rows.append({
                "structure": name, "region": r1["region"], "visit1_mean_thickness_tab_mm": a,
                "visit2_mean_thickness_tab_mm": b, "change_mm": b - a,
                "change_percent": 100.0 * (b - a) / a if a else float("nan"),
                "mapped_mean_change_mm": float(np.average(change[sel & np.isfinite(change)], weights=w))
                if w.sum() > 0 else float("nan"),
                "visit1_volume_mm3": r1["volume_mm3"], "visit2_volume_mm3": r2["volume_mm3"],
            })
    return VisitComparison(rows=rows, change_maps=change_maps,
                           bone_transforms={k: v.ravel().tolist() for k, v in transforms.items()},
                           plate_transforms=plate_transforms, registration_error_mm=errors)


def refine_on_surface(source: np.ndarray, target: np.ndarray, matrix: np.ndarray, iterations: int = 20,
                      reject_mm: float = 2.0, max_points: int = 5000) -> np.ndarray:
    """Point-to-point ICP from an initial 4x4 transform; source/target are bone-surface points (mm)."""
    step = max(1, len(source) // max_points)
    src = source[::step]
    # Every target point is kept: thinning the target to one (arbitrary) point per 0.5 mm cell biased
    # the fit by a quarter cell, so an identical knee was shifted ~0.1-0.5 mm and showed change.
    m = matrix.copy()
    for _ in range(iterations):
        moved = src @ m[:3, :3].T + m[:3, 3]
        idx, dist = nearest_points(target, moved, cell_mm=1.0)
        keep = dist < reject_mm
        if keep.sum() < 10:
            break
        a, b = src[keep], target[idx[keep]]
        ca, cb = a.mean(axis=0), b.mean(axis=0)
        u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        new = np.eye(4)
        new[:3, :3] = rot
        new[:3, 3] = cb - rot @ ca
        change = np.abs(new - m).max()
        m = new
        if change < 1e-5:
            break
    return m


def align_bone(labels1: LabelMap, labels2: LabelMap, bone_value: int, spacing_mm: float = 1.0) -> np.ndarray:
    """4x4 rigid transform (LPS mm) taking visit-1 points onto the same anatomy in visit 2."""
    fixed = _bone_image(labels1, bone_value, spacing_mm)
    moving = _bone_image(labels2, bone_value, spacing_mm)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=300,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    result = reg.Execute(fixed, moving)
    # Read the rigid matrix off the result by mapping the origin and the unit axes (works whatever
    # wrapper type SimpleITK returns).
    base = np.zeros(3)
    mapped = np.array([result.TransformPoint(tuple(p)) for p in np.vstack([base, np.eye(3)])])
    matrix = np.eye(4)
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    matrix[:3, 3] = mapped[0]
    return matrix


def _bone_image(labels: LabelMap, value: int, spacing_mm: float) -> sitk.Image:
    mask = labels.array == value
    if not mask.any():
        raise MeasurementError(f"Bone label {value} is missing in one visit: cannot align the visits")
    img = sitk.GetImageFromArray(mask.astype(np.float32))
    img.SetSpacing(tuple(labels.spacing))
    img.SetOrigin(tuple(labels.origin))
    img.SetDirection(tuple(labels.direction.ravel()))
    img = sitk.SmoothingRecursiveGaussian(img, [spacing_mm] * 3)
    size = [max(int(round(n * s / spacing_mm)), 1) for n, s in zip(img.GetSize(), img.GetSpacing())]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), [spacing_mm] * 3,
                         img.GetDirection(), 0.0, sitk.sitkFloat32)


def nearest_points(points: np.ndarray, queries: np.ndarray, cell_mm: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest of ``points`` to each query and its distance (mm), for matches within
    ``cell_mm``; farther queries get the best point of the 27 cells around them, or inf.

    A hash grid of ``cell_mm`` cells (no scipy): all candidates of the 27 neighbouring cells are
    expanded into one flat array per offset and the closest is kept per query.
    """
    cells = np.floor(points / cell_mm).astype(np.int64)
    lo = cells.min(axis=0) - 2
    dims = cells.max(axis=0) - lo + 3
    key = _cell_key(cells - lo, dims)
    order = np.argsort(key, kind="stable")
    unique_keys, run_start, run_count = np.unique(key[order], return_index=True, return_counts=True)
    qcell = np.floor(queries / cell_mm).astype(np.int64) - lo
    best = np.zeros(len(queries), dtype=np.int64)
    best_d = np.full(len(queries), np.inf)
    for offset in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), axis=-1).reshape(-1, 3):
        c = qcell + offset
        inside = np.all((c >= 0) & (c < dims), axis=1)
        k = _cell_key(np.clip(c, 0, dims - 1), dims)
        pos = np.minimum(np.searchsorted(unique_keys, k), len(unique_keys) - 1)
        found = inside & (unique_keys[pos] == k)
        count = np.where(found, run_count[pos], 0)
        total = int(count.sum())
        if total == 0:
            continue
        query = np.repeat(np.arange(len(queries)), count)
        within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        cand = order[np.repeat(run_start[pos], count) + within]
        d = np.linalg.norm(points[cand] - queries[query], axis=1)
        pick = np.lexsort((d, query))
        first = np.r_[True, query[pick][1:] != query[pick][:-1]]
        q, dq, cq = query[pick][first], d[pick][first], cand[pick][first]
        better = dq < best_d[q]
        best[q[better]] = cq[better]
        best_d[q[better]] = dq[better]
    return best, best_d


def _cell_key(cells: np.ndarray, dims: np.ndarray) -> np.ndarray:
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
