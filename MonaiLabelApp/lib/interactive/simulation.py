"""Simulated users: imperfect starting masks, click sequences, and the click-by-click protocol.

The benchmark and the refinement trainer's validation run the SAME protocol (``run_clicks``): from a
starting mask, up to N clicks, each at the centre of the current largest error region, Dice after
every click. The trainer's samples use ``corrupt`` (what an automatic result gets wrong: a shifted
boundary, a missed chunk, a false blob, or nothing at all) and ``error_clicks``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lib.evaluation.metrics import dice
from lib.interactive.clicks import largest_error_click

MAX_FALSE_BLOB_MM = 6.0  # radius of the largest false blob ``corrupt`` adds beside a structure


def _ball(shape, centre_zyx, radius_vox) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = np.asarray(centre_zyx)
    r = np.asarray(radius_vox, float)
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0


def corrupt(truth: np.ndarray, spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong mask of ``truth``: what an automatic segmentation gets wrong."""
    mask = truth.copy()
    kind = rng.choice(["erode", "dilate", "missed", "false", "mixed", "empty"], p=[0.15, 0.15, 0.25, 0.15, 0.25, 0.05])
    if kind == "empty" or not truth.any():
        return np.zeros_like(truth)
    if kind in ("erode", "mixed"):
        mask = ndimage.binary_erosion(mask, iterations=1)
    if kind == "dilate":
        mask = ndimage.binary_dilation(mask, iterations=1)
    spacing = np.asarray(spacing_zyx, float)
    if kind in ("missed", "mixed"):
        idx = np.argwhere(truth)
        mask &= ~_ball(truth.shape, idx[rng.integers(len(idx))], rng.uniform(3, 10) / spacing)
    if kind in ("false", "mixed"):
        edge = np.argwhere(ndimage.binary_dilation(truth, iterations=2) & ~truth)
        if len(edge):
            mask |= _ball(truth.shape, edge[rng.integers(len(edge))], rng.uniform(2, MAX_FALSE_BLOB_MM) / spacing)
    return mask


def starting_labels(labels: np.ndarray, value: int, spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """``labels`` with structure ``value`` corrupted (false voxels only where the map has background)."""
    truth = labels == value
    wrong = corrupt(truth, spacing_zyx, rng)
    start = labels.copy()
    start[truth & ~wrong] = 0
    start[wrong & ~truth & (labels == 0)] = value
    return start


def error_clicks(mask: np.ndarray, truth: np.ndarray, spacing_zyx, n: int) -> tuple[list, list]:
    """Up to ``n`` clicks, as a user would place them one after another if each click fixed its region
    perfectly: centres of the error regions, largest first."""
    fg, bg = [], []
    mask = mask.copy()
    for _ in range(n):
        click = largest_error_click(mask, truth, spacing_zyx)
        if click is None:
            break
        (fg if click.positive else bg).append(click.ijk)
        errors = (truth & ~mask) if click.positive else (mask & ~truth)
        components, _ = ndimage.label(errors)
        i, j, k = click.ijk
        region = components == components[k, j, i]
        mask = mask | region if click.positive else mask & ~region
    return fg, bg


@dataclass
class ClickTrace:
    dice: list[float] = field(default_factory=list)  # before any click, then after each click
    latency_s: list[float] = field(default_factory=list)
    clicks: list[dict] = field(default_factory=list)
    labels: np.ndarray | None = None  # the label map after the last click


def run_clicks(labels: np.ndarray, truth: np.ndarray, value: int, refine, spacing_zyx, max_clicks: int = 10,
               stop_dice: float = 0.999, observe=None) -> ClickTrace:
    """The benchmark protocol. ``refine(labels, foreground, background, last) -> labels`` gets the
    current label map, ALL clicks so far for the structure (as the client sends them) and the newest.
    ``observe(before, after, click)``, when given, sees every update outside the timed part."""
    trace = ClickTrace(dice=[dice(labels == value, truth)])
    fg, bg = [], []
    for _ in range(max_clicks):
        if trace.dice[-1] >= stop_dice:
            break
        click = largest_error_click(labels == value, truth, spacing_zyx)
        if click is None:
            break
        (fg if click.positive else bg).append(click.ijk)
        started = time.perf_counter()
        before, labels = labels, refine(labels, list(fg), list(bg), click.ijk)
        trace.latency_s.append(time.perf_counter() - started)
        if observe is not None:
            observe(before, labels, click)
        trace.dice.append(dice(labels == value, truth))
        trace.clicks.append({"ijk": list(click.ijk), "positive": click.positive, "region_voxels": click.region_voxels})
    trace.labels = labels
    return trace
