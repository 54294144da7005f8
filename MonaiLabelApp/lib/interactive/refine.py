"""Refining ONE structure of a label map from clicks, on a crop at the image's native resolution.

Only voxels near a click may change (within ``radius_mm``): the cost of an update grows with the
number of clicks, never with the volume, and a click never disturbs the structure far from it.
Whatever proposes the new mask (the trained click network, or a random walker until one exists), the
write-back is the same and guarantees: a voxel changes only between background and the refined
structure; voxels of every other structure (locked or not) never change and count as background for
the refined one; a positive click's voxel ends inside the structure, a negative click's outside it.
How far a proposal is trusted (reach, connection to the click, the click's sign) belongs to the
proposer: a ``Refiner`` carries both.
Arrays are (k, j, i); clicks are (i, j, k) voxel indices of the arrays given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import random_walker

from lib.inference import predict_logits
from lib.interactive.clicks import click_map
from lib.interactive.network import SIZE_MULTIPLE, ClickNetConfig
from lib.transforms.working_grid import normalize_intensity

# Until a click network is trained: a random walker, reliable only close to the click (radius and
# beta chosen on synthesised knees; figures in BENCHMARKS.md (Interactive)).
FALLBACK_RADIUS_MM = 8.0
FALLBACK_BETA = 3000.0
SEED_RADIUS_MM = 1.5  # a click seeds a small ball, not a single voxel: one voxel barely pulls a walker

# A click block up to this size (padded) runs in one forward pass: 20 mm at DESS resolution is 32x136x136.
SINGLE_PASS_VOXELS = 2_000_000

# (image, current mask, positive clicks, negative clicks, spacing_zyx) -> structure mask
Proposer = Callable[[np.ndarray, np.ndarray, list, list, tuple], np.ndarray]


def click_box(shape_zyx, clicks_ijk, spacing_zyx, radius_mm: float) -> tuple[slice, slice, slice]:
    """The block (k, j, i slices) that holds every voxel within ``radius_mm`` of a click."""
    pts = np.array([(k, j, i) for i, j, k in clicks_ijk])
    reach = np.ceil(radius_mm / np.asarray(spacing_zyx, float)).astype(int)
    lo = np.maximum(pts.min(axis=0) - reach, 0)
    hi = np.minimum(pts.max(axis=0) + reach + 1, shape_zyx)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def boundary_band(mask: np.ndarray, spacing_zyx, band_mm: float, grow: bool, shrink: bool) -> np.ndarray:
    """Voxels within ``band_mm`` of the mask's boundary: outside it when a positive click says the
    structure is bigger (``grow``), inside it when a negative click says it is smaller (``shrink``).
    The current mask itself stays a seed when growing, its outside when shrinking."""
    band = np.zeros(mask.shape, bool)
    if band_mm <= 0 or not mask.any() or mask.all():
        return band
    if grow:
        band |= ~mask & (ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= band_mm)
    if shrink:
        band |= mask & (ndimage.distance_transform_edt(mask, sampling=spacing_zyx) <= band_mm)
    return band


def near_clicks(shape_zyx, clicks_ijk, spacing_zyx, radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of any click (clicks in the block's own coordinates)."""
    seeds = np.ones(shape_zyx, bool)
    for i, j, k in clicks_ijk:
        seeds[k, j, i] = False
    return ndimage.distance_transform_edt(seeds, sampling=spacing_zyx) <= radius_mm


def refine_labels(image: np.ndarray, labels: np.ndarray, value: int, foreground, background,
                  spacing_zyx, propose: Proposer, radius_mm: float = 12.0,
                  local_clicks_only: bool = True, focus=None, band_mm: float = 0.0,
                  follow_click_sign: bool = False) -> tuple[np.ndarray, dict]:
    """A new label array: ``labels`` with structure ``value`` refined near the clicks. Returns it and
    a summary (voxels added/removed, the block worked on).

    ``focus``: the click(s) to act on, usually the newest one (earlier clicks are already in
    ``labels``); only voxels near them may change, which keeps an update's cost independent of how
    many clicks came before. Every click inside the block still constrains the result. Default: all.

    ``band_mm`` > 0: the structure's boundary band (within ``band_mm`` of its surface) anywhere in the
    arrays given (the caller's ROI) may change too, so one click can move a boundary that is wrong
    everywhere (an automatic result's usual error); the proposer must free the same band.

    ``local_clicks_only``: keep only the changes connected to a click of their sign (a proposer that
    leaks, like the random walker, needs it). ``follow_click_sign``: a positive focus click may only
    add voxels, a negative one only remove them."""

    foreground = [tuple(int(c) for c in p) for p in foreground]
    background = [tuple(int(c) for c in p) for p in background]
    focus = [tuple(int(c) for c in p) for p in focus] if focus else foreground + background
    out = labels.copy()
    if not focus:
        return out, {"added": 0, "removed": 0, "block": None}
    box = (click_box(labels.shape, focus, spacing_zyx, radius_mm) if band_mm <= 0
           else tuple(slice(0, n) for n in labels.shape))
    lo = np.array([box[2].start, box[1].start, box[0].start])  # (i, j, k)
    hi = np.array([box[2].stop, box[1].stop, box[0].stop])

    def local(points):
        return [tuple(int(c) for c in np.array(p) - lo) for p in points
                if np.all((np.array(p) >= lo) & (np.array(p) < hi))]

    local_fg, local_bg, local_focus = local(foreground), local(background), local(focus)
    block = labels[box]
    current = block == value
    # Other structures are background for this one, and are never written.
    reach = near_clicks(block.shape, local_focus, spacing_zyx, radius_mm) | boundary_band(
        current, spacing_zyx, band_mm, bool(local_fg), bool(local_bg))
    editable = ((block == 0) | current) & reach
    # A copy: the clicks are written into it below, and a proposer may hand back ``current`` itself.
    proposal = np.array(propose(image[box], current, local_fg, local_bg, tuple(spacing_zyx)), bool)
    for (i, j, k), inside in _click_signs(local_fg, local_bg, current):
        proposal[k, j, i] = inside  # the user's click is the truth at its own voxel
    added = editable & proposal & ~current
    removed = editable & ~proposal & current
    if follow_click_sign:
        # A positive click says "more here", a negative one "less": the update only moves that way.
        if not set(local_focus) & set(local_fg):
            added[:] = False
        if not set(local_focus) & set(local_bg):
            removed[:] = False
    if local_clicks_only:
        # A click corrects the error region it lies in: keep only the additions connected to a
        # positive click and the removals connected to a negative one (no collateral changes).
        added = _touching(added, local_fg)
        removed = _touching(removed, local_bg)
    new_block = block.copy()
    new_block[added] = value
    new_block[removed] = 0
    out[box] = new_block
    summary = {
        "added": int(np.count_nonzero(added)),
        "removed": int(np.count_nonzero(removed)),
        "block": [[int(v) for v in lo], [int(v) for v in hi]],
    }
    return out, summary


@dataclass(frozen=True)
class Refiner:
    """A proposer and how far its proposals are trusted when written back (see ``refine_labels``)."""

    name: str
    propose: Proposer
    radius_mm: float
    keep_connected: bool = True  # only changes connected to the click: the walker leaks without it
    follow_click_sign: bool = False  # a positive click only adds, a negative one only removes

    def __call__(self, image, labels, value, foreground, background, spacing_zyx, focus=None,
                 band_mm: float = 0.0) -> tuple[np.ndarray, dict]:
        return refine_labels(image, labels, value, foreground, background, spacing_zyx, self.propose,
                             self.radius_mm, local_clicks_only=self.keep_connected, focus=focus, band_mm=band_mm,
                             follow_click_sign=self.follow_click_sign)

    def click_step(self, image, value, spacing_zyx):
        """``refine(labels, foreground, background, newest) -> labels``, one click of the simulated
        user's protocol (lib/interactive/simulation.run_clicks) as the server answers it."""

        def refine(labels, foreground, background, newest):
            return self(image, labels, value, foreground, background, spacing_zyx, focus=[newest])[0]

        return refine


def walker_refiner(intensity_guard: bool = False, band_mm: float = 0.0) -> Refiner:
    """What the server runs until a click network is promoted."""
    return Refiner("random_walker", random_walker_proposer(FALLBACK_RADIUS_MM, FALLBACK_BETA, intensity_guard, band_mm),
                   FALLBACK_RADIUS_MM)


def network_refiner(name: str, network: torch.nn.Module, config: ClickNetConfig, device: torch.device) -> Refiner:
    """The click network with the write-back its configuration was validated with."""
    return Refiner(name, network_proposer(network, config, device), config.radius_mm, config.keep_connected,
                   config.follow_click_sign)


def _click_signs(foreground, background, current: np.ndarray) -> list[tuple[tuple[int, int, int], bool]]:
    """(voxel, inside) for every clicked voxel. A voxel clicked both ways (the annotator changed their
    mind there) gets the sign of the NEWER click. The request does not say which one is newer, but the
    older one is already in ``current`` (earlier clicks were applied by earlier updates), so the newer
    one is the click that ``current`` contradicts: at the focus click's voxel, the focus click wins."""
    signs = {p: True for p in foreground}
    for i, j, k in background:
        signs[(i, j, k)] = not current[k, j, i] if (i, j, k) in signs else False
    return list(signs.items())


def _touching(mask: np.ndarray, points) -> np.ndarray:
    """The connected components of ``mask`` that contain one of ``points`` (i, j, k)."""
    if not points or not mask.any():
        return np.zeros(mask.shape, bool)
    components, _ = ndimage.label(mask)
    keep = {int(components[k, j, i]) for i, j, k in points} - {0}
    return np.isin(components, list(keep)) if keep else np.zeros(mask.shape, bool)


# -- proposers -----------------------------------------------------------------------------------
def _balls(shape, points, spacing_zyx, radius_mm) -> np.ndarray:
    mask = np.zeros(shape, bool)
    if points:
        mask = near_clicks(shape, points, spacing_zyx, radius_mm)
    return mask


def random_walker_proposer(radius_mm: float = 12.0, beta: float = 130.0, intensity_guard: bool = False,
                           band_mm: float = 0.0) -> Proposer:
    """No learning: a random walker on the image, seeded by the clicks (small balls), by the current
    mask beyond the clicks' reach (inside = structure, outside = background).

    ``intensity_guard``: a voxel joins the structure only if its intensity is closer (in standard
    deviations) to the structure's than to the background's in this block, and leaves it only if
    closer to the background's. Off by default: on held-out synthesised knees it stopped some leaks but
    also most of the gains (BENCHMARKS.md (Interactive))."""

    def propose(image, current, fg, bg, spacing_zyx):
        far = ~(near_clicks(current.shape, fg + bg, spacing_zyx, radius_mm)
                | boundary_band(current, spacing_zyx, band_mm, bool(fg), bool(bg)))
        fg_balls = _balls(current.shape, fg, spacing_zyx, SEED_RADIUS_MM)
        bg_balls = _balls(current.shape, bg, spacing_zyx, SEED_RADIUS_MM)
        markers = np.zeros(current.shape, np.int32)
        markers[far & current] = 1
        markers[far & ~current] = 2
        markers[fg_balls] = 1
        markers[bg_balls] = 2
        if not (markers == 1).any():
            return np.zeros(current.shape, bool)
        if not (markers == 2).any() or (markers > 0).all():
            return markers == 1
        data = normalize_intensity(image.astype(np.float32))
        walked = random_walker(data, markers, beta=beta, mode="cg_j", tol=1e-3, spacing=spacing_zyx) == 1
        if not intensity_guard:
            return walked
        inside = (current & ~bg_balls) | fg_balls
        outside = (~current & ~fg_balls) | bg_balls
        if inside.sum() < 2 or outside.sum() < 2:
            return walked
        mf, sf = float(data[inside].mean()), float(data[inside].std()) + 1e-3
        mb, sb = float(data[outside].mean()), float(data[outside].std()) + 1e-3
        like_structure = np.abs(data - mf) / sf <= np.abs(data - mb) / sb
        return np.where(current, walked | like_structure, walked & like_structure)

    return propose


def network_proposer(network: torch.nn.Module, config: ClickNetConfig, device: torch.device) -> Proposer:
    """The trained click network on the block, in one pass when small, else in sliding windows."""
    network = network.eval().to(device)

    def propose(image, current, fg, bg, spacing_zyx):
        x = click_input(image, current, fg, bg, spacing_zyx, config.click_sigma_mm)
        logits = predict_logits(network, x, config.patch, SINGLE_PASS_VOXELS, device, SIZE_MULTIPLE)
        return (logits[0] > 0).cpu().numpy()

    return propose


def click_input(image, current, fg, bg, spacing_zyx, sigma_mm: float) -> np.ndarray:
    """The network's 4-channel input (C, z, y, x); training builds it with this same function."""
    return np.stack([
        normalize_intensity(image.astype(np.float32)),
        current.astype(np.float32),
        click_map(current.shape, fg, spacing_zyx, sigma_mm),
        click_map(current.shape, bg, spacing_zyx, sigma_mm),
    ]).astype(np.float32)
