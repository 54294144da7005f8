"""A refinement or scribbles request, checked: every mistake becomes a 4xx answer that says what.

Params (JSON): ``structure`` (a schema structure key), ``foreground`` / ``background`` (voxel indices
[i, j, k] of the IMAGE), ``roi`` ([[i0, j0, k0], [i1, j1, k1]], lower inclusive, upper exclusive; the
whole image when absent), ``locked`` (structure keys that must not change), ``last`` (the newest click,
[i, j, k]: the update acts near it only; default: near every click), ``echo`` (which echo of a
multi-echo image, from 1 in order of echo time; default 1). The current label map comes as the
uploaded ``label`` file: either the whole image's grid or just the ROI block.
A voxel index is a whole number or a finite decimal (rounded): MONAI Label reads the params with
``json.loads``, which also accepts NaN and Infinity, and Python counts true/false as numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException


class RequestError(HTTPException):
    def __init__(self, detail: str, status_code: int = 422):
        super().__init__(status_code=status_code, detail=detail)


@dataclass(frozen=True)
class ClickRequest:
    structure: str
    value: int
    foreground: list[tuple[int, int, int]]
    background: list[tuple[int, int, int]]
    roi: tuple[tuple[int, int, int], tuple[int, int, int]]  # (i, j, k) lower inclusive, upper exclusive
    locked: list[str]
    focus: list[tuple[int, int, int]]  # the newest click(s) ("last"): what this update acts on

    @property
    def roi_slices(self) -> tuple[slice, slice, slice]:
        """(k, j, i) slices of the ROI in the image's array."""
        lo, hi = self.roi
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def in_roi(self, points) -> list[tuple[int, int, int]]:
        lo = self.roi[0]
        return [(p[0] - lo[0], p[1] - lo[1], p[2] - lo[2]) for p in points]


def _voxel_index(value) -> int | None:
    """``value`` as a voxel index; None when it is no number (true/false, NaN, Infinity, text...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(round(value))
    return None


def _ijk(value) -> tuple[int, int, int] | None:
    """``value`` as [i, j, k] voxel indices; None when it is not three of them."""
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        return None
    ijk = tuple(_voxel_index(c) for c in value)
    return None if None in ijk else ijk


def _points(request: dict, name: str, size_ijk) -> list[tuple[int, int, int]]:
    raw = request.get(name) or []
    if not isinstance(raw, list):
        raise RequestError(f"'{name}' must be a list of [i, j, k] voxel indices, got {raw!r}", 400)
    points = []
    for n, p in enumerate(raw):
        ijk = _ijk(p)
        if ijk is None:
            raise RequestError(f"'{name}'[{n}] must be [i, j, k] voxel indices (finite numbers), got {p!r}", 400)
        if any(c < 0 or c >= s for c, s in zip(ijk, size_ijk)):
            raise RequestError(f"Click '{name}'[{n}] at voxel {list(ijk)} is outside the image (size "
                               f"{list(size_ijk)}); clicks are image voxel indices [i, j, k]", 422)
        points.append(ijk)
    return points


def parse_click_request(request: dict, schema, size_ijk, need_clicks: bool = True) -> ClickRequest:
    structures = schema.by_key
    key = request.get("structure")
    if not isinstance(key, str):
        raise RequestError(f"'structure' must be a structure key (text): one of {sorted(structures)}, got {key!r}", 400)
    if key not in structures:
        raise RequestError(f"Unknown structure {key!r}: one of {sorted(structures)}", 400)
    locked = request.get("locked") or []
    if not isinstance(locked, list) or any(not isinstance(k, str) or k not in structures for k in locked):
        raise RequestError(f"'locked' must list structure keys of the schema, got {locked!r}", 400)
    if key in locked:
        raise RequestError(f"Structure {key!r} is locked: unlock it before refining it", 409)
    foreground = _points(request, "foreground", size_ijk)
    background = _points(request, "background", size_ijk)
    if need_clicks and not (foreground or background):
        raise RequestError("No clicks: give at least one 'foreground' or 'background' voxel", 400)
    focus = _points({"last": [request["last"]]} if request.get("last") is not None else {}, "last", size_ijk)
    if focus and focus[0] not in foreground + background:
        raise RequestError(f"'last' {list(focus[0])} is not one of the clicks", 400)
    roi = request.get("roi")
    if roi is None:
        lo, hi = (0, 0, 0), tuple(int(s) for s in size_ijk)
    else:
        corners = [_ijk(c) for c in roi] if isinstance(roi, (list, tuple)) and len(roi) == 2 else [None]
        if None in corners:
            raise RequestError(f"'roi' must be [[i0, j0, k0], [i1, j1, k1]] voxel indices, got {roi!r}", 400)
        lo, hi = corners
        if any(a < 0 or b > s or b <= a for a, b, s in zip(lo, hi, size_ijk)):
            raise RequestError(f"'roi' {[list(lo), list(hi)]} is empty or outside the image "
                               f"(size {list(size_ijk)})", 422)
    for name, points in (("foreground", foreground), ("background", background)):
        for p in points:
            if any(c < a or c >= b for c, a, b in zip(p, lo, hi)):
                raise RequestError(f"Click '{name}' at voxel {list(p)} is outside the roi {[list(lo), list(hi)]}", 422)
    return ClickRequest(key, structures[key].value, foreground, background, (lo, hi), list(locked), focus)


def checked_echo(request: dict) -> int:
    """The request's ``echo`` (1 when absent): a whole number from 1, or text of one (a form field)."""
    echo = request.get("echo")
    if echo is None:
        return 1
    if isinstance(echo, str) and echo.strip().isdigit():
        echo = int(echo)
    if isinstance(echo, float) and echo.is_integer():
        echo = int(echo)
    if isinstance(echo, bool) or not isinstance(echo, int) or echo < 1:
        raise RequestError(f"'echo' must be a whole number from 1 (the echo of a multi-echo image, in order of "
                           f"echo time), got {request.get('echo')!r}", 400)
    return echo


def roi_labels(label_array: np.ndarray, request: ClickRequest, size_ijk) -> np.ndarray:
    """The current labels of the ROI block from an uploaded label map of the image or of the ROI."""
    image_shape = tuple(int(s) for s in size_ijk[::-1])
    lo, hi = request.roi
    roi_shape = tuple(b - a for a, b in zip(lo[::-1], hi[::-1]))
    if label_array.shape == image_shape:
        return np.ascontiguousarray(label_array[request.roi_slices])
    if label_array.shape == roi_shape:
        return np.ascontiguousarray(label_array)
    raise RequestError(f"The label map's size {list(label_array.shape[::-1])} is neither the image's "
                       f"{list(size_ijk)} nor the roi's {list(roi_shape[::-1])}", 422)
