"""Plain writers for triangle meshes: binary STL, binary PLY and XML VTP, with per-vertex scalars.

Coordinates are written as given (KneeAI passes patient LPS millimetres) and every file says so in
its header/comment ("SPACE=LPS", units mm), the convention 3D Slicer reads for STL/PLY/VTK models.
Files are written to a temporary name and renamed, so a reader never sees half a mesh.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic_files import write_bytes_atomically

COORDINATE_NOTE = "SPACE=LPS UNITS=mm"


def write_stl(path: str | Path, vertices: np.ndarray, triangles: np.ndarray) -> Path:
    v = np.asarray(vertices, dtype=np.float32)
    t = np.asarray(triangles, dtype=np.int64)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    record = np.dtype([("n", "<f4", 3), ("a", "<f4", 3), ("b", "<f4", 3), ("c", "<f4", 3), ("attr", "<u2")])
    data = np.zeros(len(t), dtype=record)
    data["n"], data["a"], data["b"], data["c"] = n, a, b, c
    header = f"KneeAI mesh {COORDINATE_NOTE}".encode("ascii").ljust(80, b" ")
    return _atomic_write(path, header + np.uint32(len(t)).tobytes() + data.tobytes())


def write_ply(path: str | Path, vertices: np.ndarray, triangles: np.ndarray,
              scalars: Mapping[str, np.ndarray] | None = None) -> Path:
    scalars = dict(scalars or {})
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + [(name, "<f4") for name in scalars]
    vert = np.zeros(len(vertices), dtype=np.dtype(fields))
    for i, axis in enumerate("xyz"):
        vert[axis] = vertices[:, i]
    for name, values in scalars.items():
        vert[name] = values
    face = np.zeros(len(triangles), dtype=np.dtype([("n", "u1"), ("v", "<i4", 3)]))
    face["n"] = 3
    face["v"] = triangles
    props = "".join(f"property float {name}\n" for name, _ in fields)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment KneeAI {COORDINATE_NOTE}\n"
              f"element vertex {len(vertices)}\n{props}"
              f"element face {len(triangles)}\nproperty list uchar int vertex_indices\nend_header\n")
    return _atomic_write(path, header.encode("ascii") + vert.tobytes() + face.tobytes())


def write_vtp(path: str | Path, vertices: np.ndarray, triangles: np.ndarray,
              scalars: Mapping[str, np.ndarray] | None = None, active_scalar: str | None = None) -> Path:
    """VTK XML PolyData with base64 "binary" arrays (readable by VTK/ParaView/Slicer, no zlib)."""
    scalars = dict(scalars or {})
    active = active_scalar or (next(iter(scalars)) if scalars else None)
    pd = "".join(f'<DataArray type="Float32" Name="{name}" format="binary">{_b64(values, "<f4")}</DataArray>\n'
                 for name, values in scalars.items())
    active_attr = f' Scalars="{active}"' if active else ""
    text = (
        '<?xml version="1.0"?>\n<!-- KneeAI mesh ' + COORDINATE_NOTE + ' -->\n'
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n<PolyData>\n'
        f'<Piece NumberOfPoints="{len(vertices)}" NumberOfPolys="{len(triangles)}">\n'
        f'<PointData{active_attr}>\n{pd}</PointData>\n'
        f'<Points><DataArray type="Float32" NumberOfComponents="3" format="binary">'
        f'{_b64(vertices, "<f4")}</DataArray></Points>\n'
        f'<Polys><DataArray type="Int64" Name="connectivity" format="binary">{_b64(triangles, "<i8")}</DataArray>\n'
        f'<DataArray type="Int64" Name="offsets" format="binary">'
        f'{_b64(np.arange(3, 3 * len(triangles) + 1, 3), "<i8")}</DataArray></Polys>\n'
        '</Piece>\n</PolyData>\n</VTKFile>\n')
    return _atomic_write(path, text.encode("ascii"))


def _b64(values: np.ndarray, dtype: str) -> str:
    """VTK's inline binary: base64 of (UInt64 byte count + little-endian data); NaN kept as NaN."""
    raw = np.ascontiguousarray(np.asarray(values).ravel(), dtype=dtype).tobytes()
    return base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode("ascii")


def read_stl(path: str | Path) -> tuple[np.ndarray, str]:
    """(triangle corner coordinates (M, 3, 3), header text) of a binary STL: for tests and checks."""
    raw = Path(path).read_bytes()
    count = int(np.frombuffer(raw[80:84], dtype="<u4")[0])
    record = np.dtype([("n", "<f4", 3), ("a", "<f4", 3), ("b", "<f4", 3), ("c", "<f4", 3), ("attr", "<u2")])
    data = np.frombuffer(raw[84:84 + count * record.itemsize], dtype=record)
    return np.stack([data["a"], data["b"], data["c"]], axis=1), raw[:80].decode("ascii").strip()


def _atomic_write(path: str | Path, data: bytes) -> Path:
    return write_bytes_atomically(path, data)
