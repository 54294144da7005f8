"""Knee-like phantoms with a known cartilage thickness, voxelised on anisotropic, oblique grids.

A bone (sphere or cylinder) carries a cartilage shell of constant thickness over a cap; the shell is
concentric with the bone, so the true thickness along Laplace field lines is exactly the shell
thickness everywhere away from the cap's rim. Voxel centres inside a shape get its label (binary
voxelisation, as a segmentation would be), so the staircase on 0.7 mm slices is part of the test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

FEMUR, TIBIA, FEMORAL_CARTILAGE = 1, 2, 5


@dataclass(frozen=True)
class ShellPhantom:
    kind: str  # "sphere" or "cylinder"
    radius: float  # bone radius, mm
    thickness: float  # cartilage thickness, mm
    cap_half_angle_deg: float = 60.0
    spacing: tuple[float, float, float] = (0.36, 0.36, 0.7)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # image axes vs patient axes
    center: tuple[float, float, float] = (1.3, -2.1, 0.7)  # mm, deliberately off the grid

    def axis(self) -> np.ndarray:
        """Cap axis (sphere) or the direction the cap faces (cylinder): patient +z rotated 20 deg."""
        a = np.deg2rad(20.0)
        return np.array([np.sin(a), 0.0, np.cos(a)])

    def direction(self) -> np.ndarray:
        rx, ry, rz = np.deg2rad(self.rotation_deg)
        cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
        mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return mz @ my @ mx

    def _radial(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance from the bone's centre/axis, angle from the cap axis in degrees) for mm points."""
        rel = points - np.array(self.center)
        axis = self.axis()
        if self.kind == "sphere":
            r = np.linalg.norm(rel, axis=1)
            cos = rel @ axis / np.maximum(r, 1e-9)
        else:  # cylinder along patient y
            rel = rel - np.outer(rel[:, 1], [0, 1, 0])
            r = np.linalg.norm(rel, axis=1)
            cos = rel @ axis / np.maximum(r, 1e-9)
        return r, np.rad2deg(np.arccos(np.clip(cos, -1, 1)))

    def image(self) -> sitk.Image:
        outer = self.radius + self.thickness
        half = outer + 3.0
        direction = self.direction()
        spacing = np.array(self.spacing)
        # enough voxels along each image axis to hold a cube of side 2*half in any orientation
        size = np.ceil(2 * half * np.abs(direction).sum(axis=0) / spacing).astype(int) + 1
        if self.kind == "cylinder":
            size = np.ceil(2 * half * np.abs(direction).sum(axis=0) / spacing).astype(int) + 1
        origin = np.array(self.center) - direction @ (spacing * (size - 1) / 2)
        k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
        ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
        points = ijk * spacing @ direction.T + origin
        r, angle = self._radial(points)
        labels = np.zeros(len(points), dtype=np.uint8)
        labels[r < self.radius] = FEMUR
        labels[(r >= self.radius) & (r < outer) & (angle <= self.cap_half_angle_deg)] = FEMORAL_CARTILAGE
        if self.kind == "cylinder":  # finite cylinder: cut it 12 mm either side of the centre
            cut = np.abs(points[:, 1] - self.center[1]) > 12.0
            labels[cut] = 0
        img = sitk.GetImageFromArray(labels.reshape(size[::-1]))
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(origin))
        img.SetDirection(tuple(direction.ravel()))
        return img

    def evaluable(self, points: np.ndarray, rim_mm: float = 2.0) -> np.ndarray:
        """Bone-surface points far enough from the cap rim (and cylinder ends) for the truth to hold."""
        r, angle = self._radial(points)
        rim_deg = np.rad2deg(rim_mm / self.radius)
        # on the bone's curved surface (not on a face where the measuring crop cut the bone)
        ok = (angle <= self.cap_half_angle_deg - rim_deg) & (np.abs(r - self.radius) < 0.5)
        if self.kind == "cylinder":
            ok &= np.abs(points[:, 1] - self.center[1]) < 12.0 - rim_mm
        return ok


@dataclass(frozen=True)
class KneePhantom:
    """A small, coarse right knee with every labelled part the measurements need (schema values).

    Patient LPS mm before ``rotation_deg``/``shift_mm`` move the whole knee rigidly: superior +z,
    anterior -y, patient left (= medial for this right knee) +x. Femoral condyles are spheres with a
    2 mm cartilage shell, the tibial plates flat slabs (medial ``medial_thickness``, lateral 2.5 mm,
    medial plate longer front to back), the patella a sphere with cartilage on its back.
    ``hole_radius`` punches a full-thickness defect into the centre of the medial tibial plate.
    """

    spacing: tuple[float, float, float] = (0.7, 0.5, 0.5)
    medial_thickness: float = 2.0
    lateral_thickness: float = 2.5
    hole_radius: float = 0.0
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    with_cartilage: bool = True
    tibial_gap_mm: float = 0.0  # lift the tibial plates off the bone (a broken segmentation)

    def rotation(self) -> np.ndarray:
        return ShellPhantom("sphere", 1, 1, rotation_deg=self.rotation_deg).direction()

    def image(self) -> sitk.Image:
        spacing = np.array(self.spacing)
        lo, hi = np.array([-48.0, -58.0, -16.0]), np.array([48.0, 26.0, 52.0])
        size = np.ceil((hi - lo) / spacing).astype(int) + 1
        rot = self.rotation()
        centre = (lo + hi) / 2
        direction = np.eye(3)  # grid axes stay patient axes; the anatomy is moved instead
        origin = centre + np.array(self.shift_mm) - spacing * (size - 1) / 2
        k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
        ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
        world = ijk * spacing + origin
        # anatomy coordinates: undo the rigid motion of the knee
        p = (world - np.array(self.shift_mm) - centre) @ rot + centre
        x, y, z = p.T
        labels = np.zeros(len(p), dtype=np.uint8)
        for cx, cy in ((20.0, 0.0), (-20.0, -1.0)):  # medial, lateral condyle (lateral a little forward)
            r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - 25) ** 2)
            if self.with_cartilage:
                labels[(r >= 18) & (r < 20) & (z < 30)] = 5
            labels[r < 18] = 1
        labels[(np.abs(x) < 32) & (np.abs(y + 2) < 14) & (z >= 25) & (z < 52)] = 1
        tibia = ((x / 40) ** 2 + (y / 26) ** 2 <= 1) & (z < 0) & (z >= -16)
        labels[tibia] = 2
        if self.with_cartilage:
            g = self.tibial_gap_mm
            medial = (((x - 22) / 14) ** 2 + (y / 21) ** 2 <= 1) & (z >= g) & (z < g + self.medial_thickness)
            lateral = (((x + 22) / 14) ** 2 + (y / 16) ** 2 <= 1) & (z >= g) & (z < g + self.lateral_thickness)
            if self.hole_radius > 0:
                medial &= (x - 22) ** 2 + y ** 2 > self.hole_radius ** 2
            labels[medial | lateral] = 20
        r = np.sqrt(x ** 2 + (y + 40) ** 2 + (z - 38) ** 2)
        if self.with_cartilage:
            labels[(r >= 10) & (r < 12.5) & ((y + 40) / np.maximum(r, 1e-9) > 0.6)] = 8
        labels[r < 10] = 3
        img = sitk.GetImageFromArray(labels.reshape(size[::-1]))
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(origin))
        img.SetDirection(tuple(direction.ravel()))
        return img
