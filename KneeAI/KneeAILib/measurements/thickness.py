"""Cartilage thickness at every point of a bone-cartilage interface, in millimetres.

Method (why it suits plates only 2-4 voxels thick on anisotropic voxels):
1. Anti-aliased surfaces. The bone indicator and the "solid" indicator (bone + this cartilage) are
   each smoothed with a small isotropic Gaussian (sigma 1.4 mm, see SMOOTHING_SIGMA_MM) and
   resampled to an isotropic supersampled grid in physical space. Their 0.5 level sets are the bone
   surface and the cartilage's outer surface; staircase steps of 0.7 mm slices largely cancel,
   and because each indicator is a *solid* (not the thin plate itself), smoothing does not erode
   thin cartilage.
2. Laplace's equation between them (u = 0 on bone, u = 1 outside the cartilage), solved on the
   supersampled plate (Jones et al. 2000, Yezzi & Prince 2003). Its field lines run from bone to
   surface without crossing, so thickness follows the plate even where it curves or thins, unlike
   nearest-point distances that jump across curved plates.
3. From every vertex of the bone surface mesh, the field line through it is traced (RK2) and its
   arc length between the two 0.5 crossings, each found by linear interpolation along the path, is
   the thickness there: sub-voxel at both ends, in mm, independent of the image's axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import CartilageNotOnBoneError, NoCartilageError
from .labelmap import LabelMap
from .laplace import solve_laplace
from .surface_nets import surface_nets, vertex_areas, wound_for_physical

# Gaussian sigma (mm, isotropic) for the bone and solid indicators. Chosen on the phantoms and the
# real maps (BENCHMARKS.md (Measurements)): per-axis sigmas of 0.6-1.5 voxels left 0.7 mm staircase
# ripple and made results depend on how the grid is oriented (rotating a real map moved regional
# means by up to 3.7 %). One isotropic sigma: 1.0 mm left a 0.20 mm p95 error on a cylinder lying
# along an image axis (its flat top spans ~5 mm wide steps of the 0.7 mm slices, wider than the
# smoothing); 1.4 mm brings that to 0.14 mm, keeps every sphere's p95 <= 0.07 mm (curvature bias of
# the two surfaces cancels in their difference) and moves rotated real maps by < 1 %. Bone and solid
# are smoothed separately, so thin plates are not eroded. Coarse images get at least
# SMOOTHING_FRACTION voxels (geometric mean spacing).
SMOOTHING_SIGMA_MM = 1.4
SMOOTHING_FRACTION = 1.5
# A bone-surface point counts as covered when the smoothed cartilage indicator there is at least this.
# For a flat plate of thickness t that indicator is erf(t / (sigma sqrt 2)) / 2, so with sigma 1.4 mm
# cartilage from ~0.73 mm up is measured; thinner cartilage is "thin" (neither covered nor bare). A
# lower threshold (keeping 0.52 mm) was tried: it shrank a 50 mm^2 full-thickness hole to 31 mm^2,
# because the smoothing spills cartilage into the hole's edge, where the indicator is about half the
# plate's value (~0.2): this threshold is what finds denuded bone at its true size.
COVERED_THRESHOLD = 0.2
# Light smoothing (fraction of the geometric-mean voxel size) for the thin-cartilage test, and how far
# outside the bone surface (mm) that test looks for cartilage.
THIN_CARTILAGE_SIGMA_FRACTION = 0.5
THIN_CARTILAGE_REACH_MM = (0.0, 0.3, 0.6, 0.9)


@dataclass
class PlateThickness:
    """Thickness over the bone surface under one cartilage plate (and the bare bone around it).

    vertices: (N, 3) physical mm (LPS) on the bone surface; triangles: (M, 3);
    area: mm^2 per vertex; thickness: mm per vertex, NaN where the bone is not covered;
    covered: bool per vertex.
    """

    structure: str
    bone: str
    vertices: np.ndarray
    triangles: np.ndarray
    area: np.ndarray
    thickness: np.ndarray
    covered: np.ndarray
    at_crop_edge: np.ndarray  # bool per vertex: on the open bone where the measured crop ends
    thin_cartilage: np.ndarray  # bool per vertex: under cartilage too thin to measure (not bare, not cAB)
    cartilage_points: np.ndarray  # (K, 3) mm: centres of the plate's voxels, for regional volumes
    voxel_volume: float
    working_spacing: float
    laplace_iterations: int

    @property
    def interface_area(self) -> float:
        return float(self.area[self.covered].sum())


def plate_thickness(labels: LabelMap, cartilage_value: int, bone_value: int, *, structure: str = "",
                    bone: str = "", working_spacing: float = 0.25, margin_mm: float = 3.0,
                    smoothing_fraction: float = SMOOTHING_FRACTION,
                    cartilage_mask: np.ndarray | None = None) -> PlateThickness:
    """Thickness map of one cartilage plate on its bone. ``cartilage_mask`` overrides the value test."""
    cart = labels.array == cartilage_value if cartilage_mask is None else cartilage_mask
    name = structure or f"label {cartilage_value}"
    if not cart.any():
        raise NoCartilageError(f"No {name} in the label map: nothing to measure")
    bone_mask = labels.array == bone_value
    if not bone_mask.any():
        raise CartilageNotOnBoneError(f"{name} is present but its bone ({bone or bone_value}) is not labelled")
    lo, hi = _bounding_box(cart, labels.spacing, margin_mm)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    cart_c, bone_c = cart[crop], bone_mask[crop]
    if not (_dilate6(cart_c) & bone_c).any():
        raise CartilageNotOnBoneError(
            f"{name} does not touch its bone ({bone or bone_value}) anywhere: thickness is measured from "
            "the bone-cartilage interface, so check the segmentation (a gap between cartilage and bone?)"
        )

    crop_origin = labels.origin + labels.direction @ (labels.spacing * lo[::-1])
    sigma = _sigma(labels.spacing, smoothing_fraction)
    fields = []
    for mask in (bone_c, bone_c | cart_c):
        img = sitk.GetImageFromArray(mask.astype(np.float32))
        img.SetSpacing(tuple(labels.spacing))
        img.SetOrigin(tuple(crop_origin))
        img.SetDirection(tuple(labels.direction.ravel()))
        fields.append(sitk.SmoothingRecursiveGaussian(img, sigma))

    # Isotropic working grid with the image's own axes, covering the crop, plus one empty voxel layer.
    h = float(working_spacing)
    extent = (np.array(bone_c.shape[::-1]) - 1) * labels.spacing  # (i, j, k) mm between first/last centre
    size = np.ceil(extent / h).astype(int) + 1
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing((h, h, h))
    grid.SetOrigin(tuple(crop_origin))
    grid.SetDirection(tuple(labels.direction.ravel()))
    # A lightly smoothed cartilage indicator, only to tell thin cartilage from bare bone (below).
    light = sitk.GetImageFromArray(cart_c.astype(np.float32))
    light.CopyInformation(fields[0])
    fields.append(sitk.SmoothingRecursiveGaussian(light, [THIN_CARTILAGE_SIGMA_FRACTION * float(
        np.prod(labels.spacing) ** (1 / 3))] * 3))
    b, s, c_light = (np.pad(sitk.GetArrayFromImage(sitk.Resample(f, grid, sitk.Transform(), sitk.sitkLinear,
                                                                 0.0)), 1) for f in fields)
    grid_origin = crop_origin - labels.direction @ np.full(3, h)

    domain = (b < 0.5) & (s >= 0.5)
    boundary = np.where(b >= 0.5, 0.0, 1.0).astype(np.float32)
    u, iterations = solve_laplace(domain, boundary)
    gradient = np.stack(np.gradient(u))

    verts, tris = surface_nets(b, 0.5)
    verts = _project_to_level(b, verts, 0.5)
    verts_mm = _grid_to_mm(verts, grid_origin, labels.direction, h)
    tris = wound_for_physical(tris, labels.direction)  # normals out of the bone, in patient space
    area = vertex_areas(verts_mm, tris)
    covered = _interp(s - b, verts) >= COVERED_THRESHOLD
    # Cartilage thinner than ~0.7 mm (see COVERED_THRESHOLD) is not "covered", but it is
    # not bare bone either: look just outside the bone surface in the lightly smoothed label.
    thin = ~covered & _thin_cartilage(b, c_light, verts, h)
    thickness = np.full(len(verts), np.nan)
    thickness[covered] = _trace_thickness(verts[covered], gradient, s) * h

    kji = np.argwhere(cart)
    return PlateThickness(
        structure=name, bone=bone, vertices=verts_mm, triangles=tris, area=area, thickness=thickness,
        covered=covered & np.isfinite(thickness), thin_cartilage=thin,
        at_crop_edge=np.any((verts < 2.5) | (verts > np.array(b.shape) - 3.5), axis=1), cartilage_points=labels.physical_points(kji),
        voxel_volume=labels.voxel_volume, working_spacing=h, laplace_iterations=iterations,
    )


def _trace_thickness(start: np.ndarray, gradient: np.ndarray, s: np.ndarray,
                     step: float = 0.5, max_length: float = 80.0) -> np.ndarray:
    """Arc length (grid units) along grad(u) from points on the bone surface to where s = 0.5."""
    n = len(start)
    out = np.full(n, np.nan)
    pos = start.astype(np.float64).copy()
    active = np.arange(n)
    prev_s = _interp(s, pos)
    t = np.zeros(n)
    t_bone = np.zeros(n)  # the start points lie on b = 0.5 (see _project_to_level)
    for _ in range(int(max_length / step)):
        if len(active) == 0:
            break
        p = pos[active]
        d1 = _direction(gradient, p)
        d2 = _direction(gradient, p + 0.5 * step * d1)
        ok = np.isfinite(d2).all(axis=1)
        p_new = p + step * np.nan_to_num(d2)
        ns = _interp(s, p_new)
        ps = prev_s[active]
        ta = t[active]
        tb = t_bone[active]
        crossed_s = (ps >= 0.5) & (ns < 0.5)
        ts = ta + step * (ps - 0.5) / np.maximum(ps - ns, 1e-9)
        done = crossed_s
        out[active[done]] = np.maximum(ts[done] - tb[done], 0.0)
        t[active] = ta + step
        pos[active] = p_new
        prev_s[active] = ns
        active = active[~done & ok]
    return out


def _thin_cartilage(b: np.ndarray, c_light: np.ndarray, pos: np.ndarray, h: float) -> np.ndarray:
    """True where the lightly smoothed cartilage reaches 0.25 within ~1 mm outside the bone surface."""
    eye = np.eye(3)
    g = np.stack([(_interp(b, pos + 0.5 * eye[a]) - _interp(b, pos - 0.5 * eye[a])) for a in range(3)], axis=1)
    outward = -g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    best = np.zeros(len(pos))
    for reach in THIN_CARTILAGE_REACH_MM:
        best = np.maximum(best, _interp(c_light, pos + outward * (reach / h)))
    return best >= 0.25


def _project_to_level(field: np.ndarray, pos: np.ndarray, level: float, steps: int = 3) -> np.ndarray:
    """Newton steps along the field's gradient put mesh vertices exactly on the smooth level set."""
    p = pos.astype(np.float64).copy()
    eye = np.eye(3)
    for _ in range(steps):
        g = np.stack([(_interp(field, p + 0.5 * eye[a]) - _interp(field, p - 0.5 * eye[a])) for a in range(3)],
                     axis=1)
        g2 = np.maximum((g * g).sum(axis=1, keepdims=True), 1e-12)
        delta = (level - _interp(field, p))[:, None] * g / g2
        # never move more than half a voxel: vertices start within a cell of the surface
        p += np.clip(delta, -0.5, 0.5)
    return p


def _direction(gradient: np.ndarray, pos: np.ndarray) -> np.ndarray:
    g = np.stack([_interp(gradient[i], pos) for i in range(3)], axis=1)
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 1e-8, g / norm, np.nan)


def _interp(field: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``field`` at continuous array indices (N, 3); clamps at the border."""
    shape = np.array(field.shape)
    p = np.clip(np.nan_to_num(pos), 0, shape - 1.000001)
    i0 = np.floor(p).astype(np.int64)
    f = p - i0
    out = np.zeros(len(p))
    for dz in (0, 1):
        wz = f[:, 0] if dz else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dx in (0, 1):
                wx = f[:, 2] if dx else 1 - f[:, 2]
                out += wz * wy * wx * field[i0[:, 0] + dz, i0[:, 1] + dy, i0[:, 2] + dx]
    return out


def _grid_to_mm(kji: np.ndarray, origin: np.ndarray, direction: np.ndarray, h: float) -> np.ndarray:
    return (kji[:, ::-1] * h) @ direction.T + origin


def _bounding_box(mask: np.ndarray, spacing: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    margin = np.ceil(margin_mm / spacing[::-1]).astype(int)  # array order (k, j, i)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return lo, hi


def _dilate6(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for axis in range(3):
        for shift in (1, -1):
            out |= np.roll(mask, shift, axis=axis) & _not_wrapped(mask.shape, axis, shift)
    return out


def _not_wrapped(shape: tuple[int, ...], axis: int, shift: int) -> np.ndarray:
    keep = np.ones(shape[axis], dtype=bool)
    keep[0 if shift > 0 else -1] = False
    view = [1, 1, 1]
    view[axis] = shape[axis]
    return keep.reshape(view)



def _sigma(spacing: np.ndarray, fraction: float) -> list[float]:
    """Isotropic smoothing in mm, the same for every image of the same knee (rotation and
    re-voxelisation give the same surfaces), and never less than ``fraction`` voxels."""
    return [float(max(SMOOTHING_SIGMA_MM, fraction * np.prod(spacing) ** (1 / 3)))] * 3
