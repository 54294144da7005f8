"""A procedural knee label map (schema values) for demos, tests and synthetic training data.

Geometry convention (the same for every phantom):
- The image is RAS-oriented: voxel index i runs toward patient Right, j toward Anterior, k toward
  Superior. In ITK/SimpleITK's LPS physical space that is direction diag(-1, -1, 1), so Slicer and
  nibabel both read it as "RAS". The volume is centred on physical (0, 0, 0), the scanner isocentre.
- The numpy array (``sitk.GetArrayFromImage``) is indexed [k, j, i] = [S, A, R].
- Anatomy is built in mm in a "knee frame": x toward the LATERAL side, y anterior, z superior, origin
  at the lowest point of the femoral condyles. For a right knee lateral is +R, for a left knee -R, so
  ``side`` only mirrors x.

Shapes are implicit functions (superquadrics, ellipsoids, cylinders) evaluated on voxel centres after a
smooth random displacement, so the outlines are not perfectly geometric. Cartilage is a shell of a
given thickness computed with a distance transform from the rasterised bone, so it always touches its
bone. Structures are written in a fixed priority (bones, then cartilage, then menisci) into one label
map, so nothing overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .fields import smooth_random_field

# Schema values (Resources/knee_schema.json). Kept as constants so the phantom needs no file I/O.
FEMUR, TIBIA, PATELLA, FIBULA = 1, 2, 3, 4
FEMORAL_CARTILAGE, MEDIAL_TIBIAL_CARTILAGE, LATERAL_TIBIAL_CARTILAGE, PATELLAR_CARTILAGE = 5, 6, 7, 8
MEDIAL_MENISCUS, LATERAL_MENISCUS = 9, 10
ALL_STRUCTURES = tuple(range(1, 11))

# In LPS physical space, a RAS-oriented image has direction diag(-1, -1, 1).
RAS_DIRECTION_IN_LPS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class KneeShape:
    """The random anatomical parameters of one phantom (mm and degrees)."""

    scale: float
    condyle_radius_medial: float
    condyle_radius_lateral: float
    condyle_half_width: float
    condyle_offset_x: float
    condyle_y: float
    notch_half_width: float
    groove_depth: float
    femoral_cartilage_mm: float
    tibial_cartilage_mm: float
    patellar_cartilage_mm: float
    joint_gap_mm: float
    meniscus_height_mm: float
    flexion_deg: float
    varus_deg: float
    patella_gap_mm: float
    centre_offset_mm: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "KneeShape":
        s = rng.uniform(0.82, 0.95)  # the default 90 mm field of view holds a slightly small knee
        return cls(
            scale=s,
            condyle_radius_medial=s * rng.uniform(19.0, 23.0),
            condyle_radius_lateral=s * rng.uniform(17.0, 21.0),
            condyle_half_width=s * rng.uniform(11.0, 13.5),
            condyle_offset_x=s * rng.uniform(17.0, 20.0),
            condyle_y=s * rng.uniform(-10.0, -6.0),
            notch_half_width=s * rng.uniform(7.5, 9.5),
            groove_depth=s * rng.uniform(3.0, 6.0),
            femoral_cartilage_mm=rng.uniform(2.0, 3.0),
            tibial_cartilage_mm=rng.uniform(2.0, 3.0),
            patellar_cartilage_mm=rng.uniform(2.5, 3.5),
            joint_gap_mm=rng.uniform(0.0, 0.8),
            meniscus_height_mm=s * rng.uniform(6.0, 8.0),
            flexion_deg=rng.uniform(0.0, 8.0),
            varus_deg=rng.uniform(-1.5, 1.5),
            patella_gap_mm=rng.uniform(0.0, 1.0),
            centre_offset_mm=(rng.uniform(-3, 3), s * 7.0 + rng.uniform(-3, 3), 6.0 + rng.uniform(-3, 3)),
        )


def make_knee_phantom(
    seed: int,
    side: str = "right",
    spacing: tuple[float, float, float] = (0.8, 0.8, 0.8),
    size: tuple[int, int, int] = (112, 112, 112),
) -> sitk.Image:
    """A uint8 knee label map with all ten schema structures; the shape is a function of ``seed``.

    ``spacing`` and ``size`` are in SimpleITK (i, j, k) = (R, A, S) order.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    rng = np.random.default_rng(seed)
    shape = KneeShape.draw(rng)
    lateral_sign = 1.0 if side == "right" else -1.0
    spacing_zyx = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    grid_shape = (int(size[2]), int(size[1]), int(size[0]))

    x, y, z = _knee_frame_coordinates(grid_shape, spacing_zyx, shape, lateral_sign, rng)
    labels = _rasterise(x, y, z, shape, spacing_zyx)

    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(RAS_DIRECTION_IN_LPS)
    # Centre the volume on the isocentre: RAS of voxel 0 is -(size-1)/2 * spacing on every axis.
    ras_origin = [-(n - 1) / 2.0 * s for n, s in zip(size, spacing)]
    image.SetOrigin((-ras_origin[0], -ras_origin[1], ras_origin[2]))  # RAS -> LPS
    return image


def _knee_frame_coordinates(grid_shape, spacing_zyx, shape: KneeShape, lateral_sign: float, rng):
    """Knee-frame x (lateral), y (anterior), z (superior) in mm of every voxel centre, perturbed."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(grid_shape, spacing_zyx)]
    # Physical RAS (isocentre at 0) -> knee frame: shift so the knee sits in the field of view.
    cx, cy, cz = shape.centre_offset_mm
    z1d = axes[0] + cz
    y1d = axes[1] + cy
    r1d = axes[2] + cx
    z, y, r = np.meshgrid(z1d, y1d, r1d, indexing="ij")
    x = lateral_sign * r
    # A smooth displacement of ~1 mm so outlines are not perfect quadrics.
    amplitude = 1.0
    x = x + amplitude * smooth_random_field(grid_shape, spacing_zyx, rng, 12.0)
    y = y + amplitude * smooth_random_field(grid_shape, spacing_zyx, rng, 12.0)
    z = z + amplitude * smooth_random_field(grid_shape, spacing_zyx, rng, 12.0)
    return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)


def _rasterise(x, y, z, k: KneeShape, spacing_zyx) -> np.ndarray:
    s = k.scale
    labels = np.zeros(x.shape, dtype=np.uint8)

    def put(mask: np.ndarray, value: int) -> None:
        # Only empty voxels: earlier (higher-priority) structures win, so nothing overlaps.
        labels[mask & (labels == 0)] = value

    # ---- femur (knee frame) -------------------------------------------------------------------
    femur = np.zeros(x.shape, dtype=bool)
    for cx_sign, radius in ((-1.0, k.condyle_radius_medial), (1.0, k.condyle_radius_lateral)):
        # A condyle: round in the sagittal plane, flat-sided medio-laterally (superquadric in x).
        dx = (x - cx_sign * k.condyle_offset_x) / k.condyle_half_width
        r2 = ((y - k.condyle_y) ** 2 + (z - radius) ** 2) / radius**2
        femur |= dx**4 + r2 <= 1.0
    trochlea_y, trochlea_z = 5.0 * s, 25.0 * s
    trochlea = (x / (28.0 * s)) ** 2 + ((y - trochlea_y) / (16.0 * s)) ** 2 + ((z - trochlea_z) / (22.0 * s)) ** 2 <= 1
    metaphysis = (x / (32.0 * s)) ** 2 + ((y + 3.0 * s) / (21.0 * s)) ** 2 + ((z - 30.0 * s) / (20.0 * s)) ** 2 <= 1
    shaft = ((x / (13.0 * s)) ** 2 + ((y + 2.0 * s) / (13.0 * s)) ** 2 <= 1) & (z > 30.0 * s)
    femur |= trochlea | metaphysis | shaft
    # Trochlear groove: a cylinder along z cut into the anterior surface between the facets.
    groove_radius = 10.0 * s
    groove_y = trochlea_y + 16.0 * s + groove_radius - k.groove_depth
    femur &= ~((x**2 + (y - groove_y) ** 2 <= groove_radius**2) & (z > 2.0 * s))
    # Intercondylar notch: posterior and inferior, between the condyles.
    notch = (np.abs(x) < k.notch_half_width) & (y < k.condyle_y + 6.0 * s) & (z < 22.0 * s)
    femur &= ~notch
    put(femur, FEMUR)

    # ---- tibia frame: the tibia, its cartilage, menisci and fibula flex about the condyle axis ---
    pivot_y, pivot_z = k.condyle_y, 0.5 * (k.condyle_radius_medial + k.condyle_radius_lateral)
    tx, ty, tz = _rotate_about_pivot(x, y, z, pivot_y, pivot_z, k.flexion_deg, k.varus_deg)
    plateau_top = -(k.femoral_cartilage_mm + k.tibial_cartilage_mm + k.joint_gap_mm)
    plateau_y = -4.0 * s
    # Elliptic cross-section that tapers from the plateau to the shaft over 32 mm.
    depth = np.clip((plateau_top - 8.0 * s - tz) / (32.0 * s), 0.0, 1.0)
    half_x = 36.0 * s + (14.0 * s - 36.0 * s) * depth
    half_y = 24.0 * s + (14.0 * s - 24.0 * s) * depth
    centre_y = plateau_y + (-2.0 * s - plateau_y) * depth
    tibia = ((tx / half_x) ** 2 + ((ty - centre_y) / half_y) ** 2 <= 1.0) & (tz <= plateau_top)
    # Tibial eminence (spines) rising into the notch.
    tibia |= (tx / (6.0 * s)) ** 2 + ((ty - k.condyle_y) / (9.0 * s)) ** 2 + ((tz - plateau_top) / (4.5 * s)) ** 2 <= 1
    put(tibia, TIBIA)

    fibula_x, fibula_y, fibula_z = 29.0 * s, -17.0 * s, plateau_top - 15.0 * s
    fibula = (((tx - fibula_x) / (8.5 * s)) ** 2 + ((ty - fibula_y) / (8.5 * s)) ** 2 + ((tz - fibula_z) / (10.0 * s)) ** 2) <= 1
    fibula |= (((tx - fibula_x + 0.1 * (tz - fibula_z)) ** 2 + (ty - fibula_y) ** 2) <= (6.0 * s) ** 2) & (tz < fibula_z)
    put(fibula, FIBULA)

    # ---- patella: placed just anterior to the femoral cartilage it glides on --------------------
    femoral_cartilage = _shell(femur, k.femoral_cartilage_mm, spacing_zyx)
    articular = (z < 0.75 * pivot_z + 0.35 * np.maximum(y - k.condyle_y, 0.0) + 14.0 * s) | (y > 0.0)
    articular &= z < trochlea_z + 14.0 * s
    articular &= ~((np.abs(x) < k.notch_half_width - 1.0) & (y < k.condyle_y + 6.0 * s))
    articular &= np.abs(x) < k.condyle_offset_x + 0.85 * k.condyle_half_width
    femoral_cartilage &= articular
    put(femoral_cartilage, FEMORAL_CARTILAGE)

    patella_z, half = 30.0 * s, (20.0 * s, 9.0 * s, 21.0 * s)
    slab = (np.abs(z - patella_z) < 8.0 * s) & (np.abs(x) < 14.0 * s) & (femur | femoral_cartilage)
    front = float(y[slab].max()) if slab.any() else trochlea_y + 16.0 * s
    patella_y = front + k.patellar_cartilage_mm + k.patella_gap_mm + half[1]
    patella = (x / half[0]) ** 2 + ((y - patella_y) / half[1]) ** 2 + ((z - patella_z) / half[2]) ** 2 <= 1
    put(patella, PATELLA)
    patellar_cartilage = _shell(patella, k.patellar_cartilage_mm, spacing_zyx)
    patellar_cartilage &= (y < patella_y - 0.3 * half[1]) & (np.abs(z - patella_z) < 0.8 * half[2])
    put(patellar_cartilage, PATELLAR_CARTILAGE)

    # ---- tibial cartilage plates and menisci (tibia frame) ------------------------------------
    for sign, cartilage_value, meniscus_value, open_deg in (
        (-1.0, MEDIAL_TIBIAL_CARTILAGE, MEDIAL_MENISCUS, 70.0),  # medial: open C
        (1.0, LATERAL_TIBIAL_CARTILAGE, LATERAL_MENISCUS, 40.0),  # lateral: nearly an O
    ):
        plate_x, plate_rx, plate_ry = sign * k.condyle_offset_x, 11.0 * s, 15.0 * s
        rho = np.sqrt(((tx - plate_x) / plate_rx) ** 2 + ((ty - k.condyle_y) / plate_ry) ** 2)
        height = tz - plateau_top
        cartilage_top = k.tibial_cartilage_mm * (1.0 - 0.4 * rho**2)
        plate = (rho <= 1.0) & (height > 0) & (height <= cartilage_top)
        put(plate, cartilage_value)
        # Meniscus: a wedge on the plateau rim, thickest outside, cut open toward the notch.
        base = np.where(rho <= 1.0, np.maximum(cartilage_top, 0.0), 0.0)
        wedge = k.meniscus_height_mm * np.clip((rho - 0.7) / 0.45, 0.0, 1.0)
        angle = np.degrees(np.arctan2(ty - k.condyle_y, -sign * (tx - plate_x)))  # 0 = toward the notch
        meniscus = (rho >= 0.7) & (rho <= 1.3) & (height > base) & (height <= base + wedge)
        meniscus &= np.abs(angle) > open_deg / 2.0
        put(meniscus, meniscus_value)
    return labels


def _rotate_about_pivot(x, y, z, pivot_y, pivot_z, flexion_deg, varus_deg):
    """Knee-frame coordinates expressed in the tibia's frame (flexion about x, varus about y)."""
    a, b = np.radians(flexion_deg), np.radians(varus_deg)
    dy, dz = y - pivot_y, z - pivot_z
    y1 = np.cos(a) * dy - np.sin(a) * dz
    z1 = np.sin(a) * dy + np.cos(a) * dz
    x2 = np.cos(b) * x + np.sin(b) * z1
    z2 = -np.sin(b) * x + np.cos(b) * z1
    return x2, y1 + pivot_y, z2 + pivot_z


def _shell(bone: np.ndarray, thickness_mm: float, spacing_zyx) -> np.ndarray:
    """Voxels outside ``bone`` within ``thickness_mm`` of it (cropped EDT for speed)."""
    if not bone.any():
        return np.zeros_like(bone)
    margin = [int(np.ceil(thickness_mm / s)) + 2 for s in spacing_zyx]
    index = np.nonzero(bone)
    box = tuple(
        slice(max(int(i.min()) - m, 0), min(int(i.max()) + m + 1, n))
        for i, m, n in zip(index, margin, bone.shape)
    )
    distance = ndimage.distance_transform_edt(~bone[box], sampling=spacing_zyx)
    shell = np.zeros_like(bone)
    shell[box] = (distance > 0) & (distance <= thickness_mm)
    return shell
