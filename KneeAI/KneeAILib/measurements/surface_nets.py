"""Naive surface nets: a watertight triangle mesh of a level set of a 3D field, in numpy only.

One vertex per grid cell that the surface crosses (placed at the mean of the cell's edge crossings),
two triangles per grid edge that crosses the level. Chosen over marching cubes because it needs no
case tables, gives well-shaped triangles on smooth fields and vectorises in a few lines.
Coordinates are continuous array indices; the caller maps them to millimetres.
"""

from __future__ import annotations

import numpy as np


def surface_nets(field: np.ndarray, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Return (vertices (N, 3) in array-index coordinates, triangles (M, 3) int) of ``field == level``.

    Triangles are wound so their normals point from ``field >= level`` towards ``field < level``.
    Cells on the array border are closed only if the field is below ``level`` there (pad the field).
    """
    f = np.asarray(field, dtype=np.float32)
    inside = f >= level
    n0, n1, n2 = f.shape
    cell_shape = (n0 - 1, n1 - 1, n2 - 1)

    # Sum of edge-crossing positions and crossing count per cell, edge direction by direction.
    vsum = np.zeros(cell_shape + (3,), dtype=np.float32)
    vcount = np.zeros(cell_shape, dtype=np.int16)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis] = slice(0, -1)
        b[axis] = slice(1, None)
        fa, fb = f[tuple(a)], f[tuple(b)]
        crosses = inside[tuple(a)] != inside[tuple(b)]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = np.where(crosses, (level - fa) / (fb - fa), 0).astype(np.float32)
        # edge at grid point p along `axis` belongs to the 4 cells p - {0, e_u} - {0, e_v}
        others = [ax for ax in range(3) if ax != axis]
        for du in (0, 1):
            for dv in (0, 1):
                src = [slice(None)] * 3
                src[axis] = slice(None)
                src[others[0]] = slice(du, f.shape[others[0]] - 1 + du)
                src[others[1]] = slice(dv, f.shape[others[1]] - 1 + dv)
                c = crosses[tuple(src)]
                tt = t[tuple(src)]
                vcount += c
                offset = np.zeros(3, dtype=np.float32)
                offset[others[0]] = du
                offset[others[1]] = dv
                for ax in range(3):
                    contrib = offset[ax] + (tt if ax == axis else 0)
                    vsum[..., ax] += np.where(c, contrib, 0)

    active = vcount > 0
    cell_index = np.full(cell_shape, -1, dtype=np.int64)
    cells = np.argwhere(active)
    cell_index[active] = np.arange(len(cells))
    vertices = cells.astype(np.float32) + vsum[active] / vcount[active][:, None]

    # Quads: every grid edge (not on the border in the other two axes) whose ends differ.
    triangles = []
    for axis in range(3):
        u, v = [ax for ax in range(3) if ax != axis]
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis] = slice(0, -1)
        b[axis] = slice(1, None)
        crosses = inside[tuple(a)] != inside[tuple(b)]
        starts_inside = inside[tuple(a)]
        # keep edges with 1 <= p_u <= n_u - 2 and same for v so all 4 neighbouring cells exist
        sel = [slice(None)] * 3
        sel[u] = slice(1, f.shape[u] - 1)
        sel[v] = slice(1, f.shape[v] - 1)
        p = np.argwhere(crosses[tuple(sel)])
        if len(p) == 0:
            continue
        p[:, u] += 1
        p[:, v] += 1
        flip = starts_inside[tuple(p.T)]
        eu = np.zeros(3, dtype=np.int64)
        ev = np.zeros(3, dtype=np.int64)
        eu[u] = 1
        ev[v] = 1
        c00 = cell_index[tuple((p - eu - ev).T)]
        c10 = cell_index[tuple((p - ev).T)]
        c11 = cell_index[tuple(p.T)]
        c01 = cell_index[tuple((p - eu).T)]
        # orientation: (u, v, axis) right-handed cyclic order decides the base winding
        right_handed = (u, v, axis) in ((0, 1, 2), (1, 2, 0), (2, 0, 1))
        forward = flip == right_handed
        q = np.stack([c00, c10, c11, c01], axis=1)
        q[~forward] = q[~forward][:, ::-1]
        triangles.append(q[:, [0, 1, 2]])
        triangles.append(q[:, [0, 2, 3]])
    tris = np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)
    # Where the field is exactly ``level`` at grid points, two vertices of a quad can coincide: drop
    # the zero-area halves (STL readers would, and they carry no surface).
    a, b, c = (vertices[tris[:, i]] for i in range(3))
    tris = tris[np.linalg.norm(np.cross(b - a, c - a), axis=1) > 1e-9]
    return vertices, tris


def wound_for_physical(triangles: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``surface_nets`` triangles re-wound for vertices mapped to mm with ``direction`` (the image's
    3x3 direction matrix; positive spacing): the array index order (k, j, i) is the reverse of the
    image's (i, j, k), a mirror, so the outward winding in index space is inward in patient space
    unless the direction matrix itself is a mirror (negative determinant)."""
    return triangles[:, ::-1].copy() if np.linalg.det(direction) > 0 else triangles


def triangle_areas(vertices_mm: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices_mm[triangles[:, i]] for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def vertex_areas(vertices_mm: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area attributed to each vertex: a third of each adjacent triangle (sums to the mesh area)."""
    areas = triangle_areas(vertices_mm, triangles) / 3.0
    out = np.zeros(len(vertices_mm))
    for i in range(3):
        np.add.at(out, triangles[:, i], areas)
    return out
