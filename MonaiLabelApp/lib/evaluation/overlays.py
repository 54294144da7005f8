"""Sagittal overlay pictures of an MRI with label maps in the schema colours, for a person to look at.

One picture per case: a row per sagittal slice (through the medial compartment, the middle and the
lateral compartment of the labelled knee), and per row one panel per layer: the plain image first,
then the image under each label map given (e.g. reference, prediction). Superior is up and anterior
is left whatever the file's orientation; pixels are square in millimetres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from KneeAILib.png import write_png

SLICE_FRACTIONS = (0.3, 0.5, 0.7)  # along left-right, of the labelled extent
MIN_PANEL_HEIGHT = 256  # px: small working grids are enlarged so a person can see them
FILL_ALPHA = 0.45
GAP = 4  # px of dark gap between panels


def colour_table(schema) -> np.ndarray:
    """(256, 3) uint8: schema colour per value; a group (e.g. unsplit tibial cartilage) gets the mean
    of its members' colours."""
    table = np.zeros((256, 3), np.uint8)
    for s in schema.structures:
        table[s.value] = s.color
    for group, members in schema.group_members().items():
        table[group] = np.mean([table[m] for m in members], axis=0).astype(np.uint8)
    return table


def _axes(image: sitk.Image) -> tuple[int, int, int]:
    """numpy axes (left-right, superior-inferior, anterior-posterior) of a (z, y, x) array."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)  # columns: index axes i, j, k in LPS
    lr = int(np.argmax(np.abs(direction[0])))
    rest = [a for a in range(3) if a != lr]
    si = max(rest, key=lambda a: abs(direction[2, a]))
    ap = next(a for a in rest if a != si)
    return 2 - lr, 2 - si, 2 - ap  # index axis i is numpy axis 2


def _slice_positions(mask: np.ndarray, axis: int, fractions: Sequence[float]) -> list[int]:
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, mask.shape[axis] - 1)
    return sorted({int(round(lo + f * (hi - lo))) for f in fractions})


def _window(array: np.ndarray) -> tuple[float, float]:
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    lo, hi = np.percentile(sample, [1.0, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def sagittal_panels(image: sitk.Image, label_maps: Sequence[sitk.Image], schema,
                    fractions: Sequence[float] = SLICE_FRACTIONS) -> np.ndarray:
    """The picture as an (H, W, 3) uint8 array. Every label map must share the image's grid."""
    for labels in label_maps:
        if labels.GetSize() != image.GetSize():
            raise ValueError(f"label map size {labels.GetSize()} differs from the image's {image.GetSize()}")
    lr, si, ap = _axes(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing_zyx = np.asarray(image.GetSpacing())[::-1]
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    layers = [sitk.GetArrayViewFromImage(labels) for labels in label_maps]
    lo, hi = _window(volume)
    table = colour_table(schema)

    union = np.zeros(volume.shape, bool)
    for layer in layers:
        union |= layer > 0
    positions = _slice_positions(union, lr, fractions)

    # Square pixels in mm, at least MIN_PANEL_HEIGHT rows: nearest-neighbour index maps.
    rows_mm = volume.shape[si] * spacing_zyx[si]
    pixel_mm = min(spacing_zyx[si], spacing_zyx[ap], rows_mm / MIN_PANEL_HEIGHT)
    row_index = _index_map(volume.shape[si], spacing_zyx[si], pixel_mm)
    col_index = _index_map(volume.shape[ap], spacing_zyx[ap], pixel_mm)
    # Superior up: LPS +z is superior. Anterior left: LPS +y is posterior.
    if direction[2, 2 - si] > 0:
        row_index = row_index[::-1]
    if direction[1, 2 - ap] < 0:
        col_index = col_index[::-1]

    def plane(array: np.ndarray, position: int) -> np.ndarray:
        cut = np.take(array, position, axis=lr)  # remaining axes keep their order
        if si > ap:
            cut = cut.T
        return cut[np.ix_(row_index, col_index)]

    picture_rows = []
    for position in positions:
        grey = np.clip((plane(volume, position) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        base = np.repeat(grey[:, :, None], 3, axis=2)
        panels = [base] + [_overlay(base, plane(layer, position), table) for layer in layers]
        picture_rows.append(_hstack(panels))
    return _vstack(picture_rows)


def write_sagittal_overlay(path: str | Path, image: sitk.Image, label_maps: Sequence[sitk.Image], schema,
                           fractions: Sequence[float] = SLICE_FRACTIONS) -> Path:
    write_png(sagittal_panels(image, label_maps, schema, fractions), path)
    return Path(path)


def _index_map(n: int, spacing: float, pixel_mm: float) -> np.ndarray:
    out = max(1, int(round(n * spacing / pixel_mm)))
    return np.clip(((np.arange(out) + 0.5) * pixel_mm / spacing).astype(int), 0, n - 1)


def _overlay(base: np.ndarray, labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    colours = table[labels]
    inside = labels > 0
    out = base.astype(np.float32)
    out[inside] = (1 - FILL_ALPHA) * out[inside] + FILL_ALPHA * colours[inside]
    # Solid outlines: a pixel whose right or lower neighbour has another label.
    edge = np.zeros_like(inside)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge &= inside
    out[edge] = colours[edge]
    return out.astype(np.uint8)


def _hstack(panels: list[np.ndarray]) -> np.ndarray:
    gap = np.full((panels[0].shape[0], GAP, 3), 20, np.uint8)
    parts = [panels[0]]
    for panel in panels[1:]:
        parts += [gap, panel]
    return np.concatenate(parts, axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    gap = np.full((GAP, rows[0].shape[1], 3), 20, np.uint8)
    parts = [rows[0]]
    for row in rows[1:]:
        parts += [gap, row]
    return np.concatenate(parts, axis=0)
