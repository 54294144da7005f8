"""Laplace's equation on a voxel domain with Dirichlet values around it, solved by conjugate gradients.

Only the domain voxels are unknowns (a cartilage plate is a thin shell, a few per cent of its bounding
box), so the system is built on their flat indices and solved with plain numpy: the 7-point Laplacian
is symmetric positive definite, and CG converges in a few hundred iterations for shells tens of
voxels thick. No scipy, so this runs inside Slicer's Python as is.
"""

from __future__ import annotations

import numpy as np


def solve_laplace(domain: np.ndarray, boundary_values: np.ndarray, *, tol: float = 1e-5,
                  max_iter: int = 2000, initial: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Solve lap(u) = 0 on ``domain`` (bool, must not touch the array border) with u = boundary_values
    elsewhere. Isotropic grid assumed. Returns (u as float32 array of the full shape, iterations used).
    """
    shape = domain.shape
    if domain[0].any() or domain[-1].any() or domain[:, 0].any() or domain[:, -1].any() \
            or domain[:, :, 0].any() or domain[:, :, -1].any():
        raise ValueError("Laplace domain must not touch the array border (pad it)")
    u = boundary_values.astype(np.float32).copy()
    idx = np.flatnonzero(domain)
    n = len(idx)
    if n == 0:
        return u, 0
    strides = (shape[1] * shape[2], shape[2], 1)
    unknown_id = np.full(domain.size, n, dtype=np.int64)  # n points at an appended zero
    unknown_id[idx] = np.arange(n)
    flat_bc = u.ravel()
    neighbours = np.empty((6, n), dtype=np.int64)
    rhs = np.zeros(n, dtype=np.float64)
    row = 0
    for s in strides:
        for sign in (-1, 1):
            nb = idx + sign * s
            neighbours[row] = unknown_id[nb]
            is_fixed = neighbours[row] == n
            rhs += np.where(is_fixed, flat_bc[nb], 0.0)
            row += 1

    def apply(x: np.ndarray) -> np.ndarray:
        ext = np.append(x, 0.0)
        return 6.0 * x - ext[neighbours].sum(axis=0)

    x = initial.ravel()[idx].astype(np.float64) if initial is not None else np.full(n, 0.5)
    r = rhs - apply(x)
    p = r.copy()
    rr = float(r @ r)
    target = (tol * np.linalg.norm(rhs)) ** 2
    it = 0
    while it < max_iter and rr > target:
        ap = apply(p)
        alpha = rr / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    u.ravel()[idx] = x.astype(np.float32)
    return u, it
