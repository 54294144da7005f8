"""2D thickness-map pictures per cartilage plate (PNG, pure numpy) for the report.

Each plate is flattened in the knee frame the way it is usually drawn: tibial plates seen from
above (medial-lateral x anterior-posterior), the patella from behind (medial-lateral x
superior-inferior), the femur unrolled around the distal femur's centre (medial-lateral x arc
length from posterior over distal to the trochlea). Medial is on the left and lateral on the right
for a left and a right knee alike (marked M and L above the map). Pixels are 0.5 mm; a colour bar
with its mm scale is drawn under each map (glyphs from a built-in 3x5 font, so no imaging library is
needed).
"""

from __future__ import annotations

import numpy as np

PIXEL_MM = 0.5
HEADER_ROWS = 14
# viridis at 6 stops (matplotlib's data), interpolated linearly
_STOPS = np.array([[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]],
                  dtype=float)
_DIVERGING = np.array([[178, 24, 43], [239, 138, 98], [247, 247, 247], [103, 169, 207], [33, 102, 172]],
                      dtype=float)


def colormap(values: np.ndarray, vmin: float, vmax: float, diverging: bool = False) -> np.ndarray:
    stops = _DIVERGING if diverging else _STOPS
    x = np.clip((np.asarray(values, dtype=float) - vmin) / max(vmax - vmin, 1e-9), 0, 1) * (len(stops) - 1)
    i = np.minimum(np.floor(np.nan_to_num(x)).astype(int), len(stops) - 2)
    f = (np.nan_to_num(x) - i)[..., None]
    return ((1 - f) * stops[i] + f * stops[i + 1]).astype(np.uint8)


def plate_map_coordinates(structure: str, frame_coords: np.ndarray, femur_centre_frame: np.ndarray) -> np.ndarray:
    """(N, 2) map coordinates in mm (column = x to the right, row = y downward) for knee-frame points."""
    ml, ap, si = frame_coords[:, 0], frame_coords[:, 1], frame_coords[:, 2]
    if structure.endswith("tibial_cartilage"):
        return np.stack([-ml, -ap], axis=1)  # medial (ml > 0) left, lateral right; anterior at the top
    if structure == "patellar_cartilage":
        return np.stack([-ml, -si], axis=1)  # seen from behind, superior at the top
    rel = frame_coords - femur_centre_frame
    angle = np.arctan2(rel[:, 1], -rel[:, 2])
    radius = np.median(np.hypot(rel[:, 1], rel[:, 2]))
    return np.stack([-ml, -angle * radius], axis=1)  # trochlea at the top, posterior at the bottom


def rasterise(map_xy: np.ndarray, values: np.ndarray, in_plate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean value per pixel with NaN where empty, bool pixel inside the plate)."""
    xy = map_xy[in_plate]
    lo = xy.min(axis=0) - 2 * PIXEL_MM
    cols, rows = (np.ceil((xy.max(axis=0) - lo) / PIXEL_MM).astype(int) + 2)
    ij = np.floor((map_xy - lo) / PIXEL_MM).astype(int)
    ok = in_plate & (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < cols) & (ij[:, 1] < rows)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    np.add.at(total, (ij[ok, 1], ij[ok, 0]), np.nan_to_num(values[ok]))
    np.add.at(count, (ij[ok, 1], ij[ok, 0]), 1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count > 0


def map_picture(image: np.ndarray, vmin: float, vmax: float, scale: int = 4, diverging: bool = False) -> np.ndarray:
    """RGB picture (uint8) of a value image with NaN as white, upscaled, with a labelled colour bar."""
    rgb = colormap(image, vmin, vmax, diverging)
    rgb[np.isnan(image)] = 255
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    width = max(rgb.shape[1], 160)
    top = HEADER_ROWS  # the M (medial) and L (lateral) marks above the map
    canvas = np.full((top + rgb.shape[0] + 34, width, 3), 255, dtype=np.uint8)
    canvas[top:top + rgb.shape[0], :rgb.shape[1]] = rgb
    _text(canvas, "M", 2, 2)
    _text(canvas, "L", 2, rgb.shape[1] - 8)
    bottom = top + rgb.shape[0]
    bar = colormap(np.linspace(vmin, vmax, width - 20), vmin, vmax, diverging)
    canvas[bottom + 4:bottom + 14, 10:width - 10] = bar[None]
    _text(canvas, f"{vmin:.1f}", bottom + 18, 10)
    label = f"{vmax:.1f} MM"
    _text(canvas, label, bottom + 18, width - 10 - 8 * len(label))
    return canvas


# 3x5 pixel glyphs for the colour-bar labels
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "+": "000010111010000", "M": "101111111101101", "L": "100100100100111", " ": "000000000000000",
}


def _text(canvas: np.ndarray, text: str, top: int, left: int, scale: int = 2) -> None:
    for n, ch in enumerate(text.upper()):
        glyph = np.array([int(c) for c in _FONT.get(ch, _FONT[" "])], dtype=bool).reshape(5, 3)
        big = np.repeat(np.repeat(glyph, scale, axis=0), scale, axis=1)
        x = left + n * 4 * scale
        region = canvas[top:top + big.shape[0], x:x + big.shape[1]]
        if region.shape[:2] == big.shape:
            region[big] = 0
