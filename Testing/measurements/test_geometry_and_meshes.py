"""Surface nets, the Laplace solver and the mesh writers, checked against exact answers and real readers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from KneeAILib.measurements.laplace import solve_laplace
from KneeAILib.measurements.mesh_io import read_stl, write_ply, write_stl, write_vtp
from KneeAILib.measurements.surface_nets import surface_nets, triangle_areas


def _sphere_field(n=48, radius=15.37, centre=(24.2, 23.7, 24.4)):
    z, y, x = np.mgrid[:n, :n, :n]
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    return np.clip(radius - r + 0.5, 0, 1), np.array(centre), radius


def test_surface_nets_sphere_area_and_outward_normals():
    field, centre, radius = _sphere_field()
    v, t = surface_nets(field)
    area = triangle_areas(v, t).sum()
    assert area == pytest.approx(4 * np.pi * radius ** 2, rel=0.01)
    a, b, c = (v[t[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    facing = np.sum(normals * ((a + b + c) / 3 - centre), axis=1)
    real = np.linalg.norm(normals, axis=1) > 1e-9  # a few quads fold to zero area where a field is exactly 0.5
    assert real.mean() > 0.99 and np.all(facing[real] > 0)
    # closed surface: every edge is shared by exactly two triangles
    edges = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)


def test_laplace_between_concentric_spheres_matches_the_exact_solution():
    n = 41
    z, y, x = np.mgrid[:n, :n, :n] - 20.0
    r = np.sqrt(x * x + y * y + z * z)
    r0, r1 = 6.0, 16.0
    domain = (r > r0) & (r < r1)
    boundary = np.where(r <= r0, 0.0, 1.0)
    u, iterations = solve_laplace(domain, boundary)
    exact = (1 / r0 - 1 / np.maximum(r, 1e-9)) / (1 / r0 - 1 / r1)
    inner = domain & (r > r0 + 2) & (r < r1 - 2)
    assert iterations < 500
    # the spheres' voxel staircase (6 voxels radius) bounds the agreement, not the solver
    error = np.abs(u[inner] - exact[inner])
    assert error.mean() < 0.015 and error.max() < 0.06


def test_mesh_files_round_trip_through_vtk_readers(tmp_path):
    vtk = pytest.importorskip("vtk")
    field, _, _ = _sphere_field(n=24, radius=8.13, centre=(12.1, 11.8, 12.3))
    v, t = surface_nets(field)
    scalar = v[:, 0].astype(float)
    write_stl(tmp_path / "s.stl", v, t)
    write_ply(tmp_path / "s.ply", v, t, {"thickness_mm": scalar})
    write_vtp(tmp_path / "s.vtp", v, t, {"thickness_mm": scalar})

    corners, header = read_stl(tmp_path / "s.stl")
    assert "SPACE=LPS" in header and corners.shape == (len(t), 3, 3)
    for reader_class, name in ((vtk.vtkSTLReader, "s.stl"), (vtk.vtkPLYReader, "s.ply"),
                               (vtk.vtkXMLPolyDataReader, "s.vtp")):
        reader = reader_class()
        reader.SetFileName(str(tmp_path / name))
        reader.Update()
        poly = reader.GetOutput()
        assert poly.GetNumberOfPolys() == len(t), name
    arr = reader.GetOutput().GetPointData().GetArray("thickness_mm")  # the VTP, read by VTK
    values = np.array([arr.GetValue(i) for i in range(arr.GetNumberOfTuples())])
    assert np.allclose(values, scalar, atol=1e-4)
    # vtkPLYReader ignores extra vertex properties, so read the PLY's own header and records
    raw = (tmp_path / "s.ply").read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    assert b"property float thickness_mm" in header and b"SPACE=LPS" in header
    records = np.frombuffer(body[:len(v) * 16], dtype="<f4").reshape(len(v), 4)
    assert np.allclose(records[:, :3], v, atol=1e-4) and np.allclose(records[:, 3], scalar, atol=1e-4)
    assert ET.parse(tmp_path / "s.vtp").getroot().tag == "VTKFile"


def test_denuded_patches_are_enclosed_bare_bone_of_a_minimum_size():
    from KneeAILib.measurements.denuded import enclosed_uncovered

    triangles = np.array([[i, i + 1, i + 2] for i in range(8)])  # a strip of 10 vertices
    covered = np.ones(10, dtype=bool)
    covered[[4, 5]] = False  # a bare patch inside the plate
    covered[9] = False  # bare bone at the open end of the measured surface
    open_end = np.zeros(10, dtype=bool)
    open_end[9] = True
    assert np.flatnonzero(enclosed_uncovered(triangles, covered, open_end)).tolist() == [4, 5]
    area = np.ones(10)
    assert not enclosed_uncovered(triangles, covered, open_end, area, min_area_mm2=2.5).any()
    assert np.flatnonzero(enclosed_uncovered(triangles, covered, open_end, area, min_area_mm2=2.0)).tolist() == [4, 5]


def test_tibial_plate_gap_is_the_middle_of_an_empty_gap_whichever_way_the_axis_points():
    """Two plates 14 mm apart with nothing between them: the split is the gap's centre, and mirroring
    the axis mirrors it (the first empty bin would put it at one edge, a different one per direction)."""
    from KneeAILib.measurements.frame import _plate_gap

    rng = np.random.default_rng(3)
    coord = np.concatenate([rng.uniform(-30.0, -7.0, 4000), rng.uniform(7.0, 28.0, 4000)])
    split = _plate_gap(coord)
    assert split == pytest.approx(0.0, abs=1.5)
    assert _plate_gap(-coord) == pytest.approx(-split, abs=0.6)
