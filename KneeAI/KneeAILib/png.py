"""A minimal PNG writer (numpy + zlib): pictures can be written where neither VTK nor Pillow is
installed (the server environment has neither as a dependency). The server's overlays and the
measurements' thickness maps both use it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .atomic_files import write_bytes_atomically


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (height, width, 3) uint8 RGB or (height, width) uint8 grey array."""
    array = np.ascontiguousarray(rgb)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    rows = array.reshape(height, -1)
    # Filter type 0 (none) in front of every scan line; zlib does the compression.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


def write_png(rgb: np.ndarray, path: str | Path) -> None:
    """Write atomically (temporary file + rename): a viewer never sees half a picture."""
    write_bytes_atomically(path, encode_png(rgb))
