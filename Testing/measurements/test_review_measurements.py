"""Defects found in review of the measurements: mesh winding in patient space, visits of an identical knee,
and label maps that are a single slice."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from phantoms import FEMORAL_CARTILAGE, FEMUR, KneePhantom, ShellPhantom

from KneeAILib.measurements import LabelMap, plate_thickness
from KneeAILib.measurements.cli import main
from KneeAILib.measurements.errors import GeometryError
from KneeAILib.measurements.longitudinal import refine_on_surface
from KneeAILib.measurements.mesh_io import read_stl, write_stl
from KneeAILib.measurements.structure_meshes import structure_mesh


def _flipped(image: sitk.Image, axes: tuple[int, ...]) -> sitk.Image:
    """The same physical image with its voxels stored in reverse along image ``axes`` (i=0, j=1, k=2):
    the direction matrix gets those columns negated (a mirror when an odd number of axes is flipped)."""
    array = sitk.GetArrayFromImage(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    for axis in axes:
        array = np.flip(array, axis=2 - axis)
        origin = origin + direction[:, axis] * spacing[axis] * (size[axis] - 1)
        direction[:, axis] *= -1
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(tuple(origin))
    out.SetDirection(tuple(direction.ravel()))
    return out


def _ellipsoid(direction: np.ndarray) -> sitk.Image:
    z, y, x = np.mgrid[:40, :40, :40]
    array = (((x - 20) * 0.5) ** 2 + ((y - 20) * 0.5) ** 2 + (z - 20) ** 2 < 100).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 1.0))
    image.SetOrigin((3.0, -7.0, 11.0))
    image.SetDirection(tuple(direction.ravel()))
    return image


def _signed_volume(corners: np.ndarray) -> float:
    """Volume enclosed by triangles (M, 3, 3): positive when their normals point outward."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0]),
                                       np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])],
                         ids=["identity", "mirrored-x", "rotated-180", "permuted"])
def test_structure_stl_normals_point_outward_in_patient_space(direction, tmp_path):
    # 20 x 20 x 10 mm ellipsoid (semi-axes 10, 10, 10 mm in voxel terms 20, 20, 10): volume 4/3 pi 10^3
    labels = LabelMap.from_image(_ellipsoid(direction))
    verts, tris = structure_mesh(labels, 1)
    corners, _ = read_stl(write_stl(tmp_path / "femur.stl", verts, tris))
    assert _signed_volume(corners) == pytest.approx(4 / 3 * np.pi * 1000, rel=0.06)


@pytest.mark.parametrize("flip_axes", [(), (0,)], ids=["as-built", "mirrored-grid"])
def test_thickness_mesh_normals_point_out_of_the_bone(flip_axes):
    phantom = ShellPhantom("sphere", 15.0, 1.2, rotation_deg=(20, 10, 35))
    labels = LabelMap.from_image(_flipped(phantom.image(), flip_axes))
    plate = plate_thickness(labels, FEMORAL_CARTILAGE, FEMUR)
    v, t = plate.vertices, plate.triangles
    t = t[plate.covered[t].all(axis=1)]  # the bone sphere under the cap (not the crop's cut faces)
    a, b, c = (v[t[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    outward = np.einsum("ij,ij->i", normals, (a + b + c) / 3 - np.array(phantom.center))
    assert (outward > 0).mean() > 0.99


def test_surface_alignment_of_a_bone_with_itself_is_the_identity():
    labels = LabelMap.from_image(ShellPhantom("sphere", 15.0, 1.2, rotation_deg=(20, 10, 35)).image())
    plate = plate_thickness(labels, FEMORAL_CARTILAGE, FEMUR)
    # the bone sphere under the cap only: a cap is not rotation-symmetric about every axis
    surface = plate.vertices[plate.covered]
    matrix = refine_on_surface(surface, surface, np.eye(4))
    moved = surface @ matrix[:3, :3].T + matrix[:3, 3]
    assert np.abs(moved - surface).max() < 1e-3  # mm; the thinned target had moved it by ~0.1 mm


def test_a_knee_compared_with_itself_shows_no_change():
    from KneeAILib.measurements import compare_visits, measure_knee
    labels = LabelMap.from_image(KneePhantom(hole_radius=4.0).image())
    m = measure_knee(labels)
    c = compare_visits(labels, m, labels, m)
    for name, change in c.change_maps.items():
        matched = change[np.isfinite(change)]
        assert len(matched) > 0.99 * m.plates[name].in_plate.sum()
        assert np.abs(matched).max() < 1e-6, name  # was up to 1.05 mm (medial tibia)
        assert c.registration_error_mm[name] < 1e-6
    for row in c.rows:
        if np.isfinite(row["mapped_mean_change_mm"]):
            assert abs(row["mapped_mean_change_mm"]) < 1e-6, row["region"]


@pytest.mark.parametrize("slices", [1, 3])
def test_a_single_slice_or_thin_slab_is_refused_with_a_clear_error(slices, tmp_path, capsys):
    image = KneePhantom().image()
    array = sitk.GetArrayFromImage(image)
    j = array.shape[1] // 2
    slab = sitk.GetImageFromArray(np.ascontiguousarray(array[:, j:j + slices, :]))
    slab.SetSpacing(image.GetSpacing())
    slab.SetOrigin(image.GetOrigin())
    with pytest.raises(GeometryError, match="3D"):
        LabelMap.from_image(slab)
    path = tmp_path / "slab.nii.gz"
    sitk.WriteImage(slab, str(path))
    assert main(["measure", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "3D" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_thickness_maps_put_medial_on_the_left_and_say_so():
    """Every plate's map draws medial (knee frame x > 0) on the left, for either knee: the picture marks M
    and L above the map, and the report says it (a comment said the opposite and nothing was marked)."""
    from KneeAILib.measurements.thickness_map_image import HEADER_ROWS, map_picture, plate_map_coordinates

    medial_and_lateral = np.array([[10.0, 5.0, -3.0], [-10.0, 5.0, -3.0]])
    for plate in ("medial_tibial_cartilage", "lateral_tibial_cartilage", "patellar_cartilage",
                  "femoral_cartilage"):
        xy = plate_map_coordinates(plate, medial_and_lateral, np.array([0.0, 0.0, 20.0]))
        assert xy[0, 0] < xy[1, 0], plate
    picture = map_picture(np.full((30, 60), 2.0), 0.0, 4.0)
    header = picture[:HEADER_ROWS].min(axis=2) == 0  # black glyph pixels
    left, right = header[:, :12], header[:, 60 * 4 - 12:60 * 4]
    assert left.any() and right.any()
    assert left.sum() > right.sum()  # M has more ink than L: the M is the one on the left
