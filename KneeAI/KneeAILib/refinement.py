"""Interactive correction of one segment, client side (pure Python: numpy + the REST client).

- ``ClickSet``: the positive/negative clicks placed per segment (voxel indices i, j, k), in order.
- ``refinement_request``: what an Update sends: the structure, the clicks near the newest one (at a
  voxel clicked more than once only the newest click), the region (ROI) around it and the current
  labels of that ROI only; the image itself is the server's copy (its datastore id), never sent again.
- ``merge_into_segment``: the answer goes into THAT segment only: a voxel changes only between
  background and the refined structure; locked segments and every other segment stay exactly as they
  are (so they count as background for the refined one, and are never overwritten).
- ``UndoStack``: each merge records the voxels it changed and their old values; undo restores them
  (never over a voxel that another segment holds by then, never in a locked segment). A step may also
  name the clicks that produced it, so that whoever holds the clicks can take them back with it.
- ``scribble_request``: the same for painted foreground/background strokes: the painted voxels (thinned
  to one per 0.87 mm cell), the ROI around them, and that ROI's labels.
- ``refine_segment`` / ``refine_segment_from_scribbles``: the whole Update on a label array; when the
  server cannot be reached it raises and the labels the user edited are left untouched (the merge only
  happens on a complete answer). It returns the merge's record; the caller decides when it becomes an
  undo step (in Slicer: once the scene has it, not when a worker thread got the answer).
Arrays are (k, j, i) like PixelVolume's; clicks are (i, j, k).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .client import KneeAIClient
from .schema import KneeSchema
from .volume import PixelVolume, VolumeError, read_volume_file, write_volume_atomically

REFINEMENT_MODEL = "knee_refinement"
SCRIBBLE_MODEL = "knee_scribbles"
REACH_MM = 25.0  # the ROI around the newest click or the strokes: wider than any reach on the server
# The server seeds a 1.5 mm ball around every scribble voxel, so one voxel per cell whose diagonal is
# 1.5 mm seeds every painted voxel (a painted stroke has thousands of voxels; MONAI Label's form field
# holding the params has a size limit).
SCRIBBLE_CELL_MM = 1.5 / 3 ** 0.5
# The walker's cost grows with the ROI: strokes spanning more than this are refused, not sent (a
# whole-knee ROI takes minutes on a CPU); an annotator corrects one region per Update.
MAX_SCRIBBLE_SPAN_MM = 80.0


class RefinementError(ValueError):
    """A refinement the client refuses before asking the server (locked segment, click outside the image)."""


@dataclass
class ClickSet:
    """Clicks per structure key: [(ijk, positive), ...] in the order they were placed."""

    clicks: dict[str, list[tuple[tuple[int, int, int], bool]]] = field(default_factory=dict)

    def add(self, structure: str, ijk, positive: bool) -> None:
        self.clicks.setdefault(structure, []).append((tuple(int(c) for c in ijk), bool(positive)))

    def remove_last(self, structure: str) -> None:
        if self.clicks.get(structure):
            self.clicks[structure].pop()

    def of(self, structure: str) -> list[tuple[tuple[int, int, int], bool]]:
        return list(self.clicks.get(structure, []))

    def clear(self, structure: str) -> None:
        self.clicks.pop(structure, None)


@dataclass(frozen=True)
class Edit:
    """What one merge changed in ``structure`` (label ``value``): flat voxel indices and their values before it."""

    structure: str
    value: int
    indices: np.ndarray
    old_values: np.ndarray
    # The clicks that produced this change, as the caller identifies them (in Slicer: markups points);
    # an undo hands them back so that they are taken back too, or the next Update would redo the change.
    clicks: tuple = ()


@dataclass(frozen=True)
class Refinement:
    """One Update's answer, merged into the label array it was asked for: the server's params, the record,
    and which of the structure's clicks the request carried (positions in ``ClickSet.of``): the clicks
    that produced it."""

    params: dict
    edit: Edit
    clicks_sent: tuple[int, ...] = ()
    from_scribbles: bool = False

    @property
    def structure(self) -> str:
        return self.edit.structure


class UndoStack:
    def __init__(self) -> None:
        self._edits: list[Edit] = []

    def push(self, edit: Edit) -> None:
        self._edits.append(edit)

    def __len__(self) -> int:
        return len(self._edits)

    def __iter__(self):
        """The steps, oldest first."""
        return iter(list(self._edits))

    @property
    def last(self) -> Edit | None:
        return self._edits[-1] if self._edits else None

    def undo(self, labels: np.ndarray, locked: set[str] = frozenset()) -> Edit | None:
        """Restores, in place, the voxels of the last refinement; returns its record (None: nothing to undo).
        A voxel another segment has taken since stays that segment's: undo, like the refinement, changes
        only background and the refined structure. When that structure is in ``locked`` nothing changes
        and the step stays on the stack: a locked segment is one the annotator has finished."""
        if not self._edits:
            return None
        if self._edits[-1].structure in locked:
            raise RefinementError(f"'{self._edits[-1].structure}' is locked: unlock it to undo its last update")
        edit = self._edits.pop()
        flat = labels.reshape(-1)
        still_free = np.isin(flat[edit.indices], (0, edit.value))
        flat[edit.indices[still_free]] = edit.old_values[still_free]
        return edit


def check_click(ijk, shape_kji) -> tuple[int, int, int]:
    ijk = tuple(int(c) for c in ijk)
    if any(c < 0 or c >= s for c, s in zip(ijk, shape_kji[::-1])):
        raise RefinementError(f"The click at voxel {list(ijk)} is outside the image (size {list(shape_kji[::-1])})")
    return ijk


def roi_around(ijk, shape_kji, spacing, reach_mm: float = REACH_MM,
               upper_ijk=None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lower, upper) voxel indices (i, j, k; upper exclusive) within ``reach_mm`` of a click, or of the
    box from ``ijk`` to ``upper_ijk`` (inclusive) when given."""
    reach = np.ceil(reach_mm / np.asarray(spacing, float)).astype(int)
    size = np.array(shape_kji[::-1])
    lo = np.maximum(np.array(ijk) - reach, 0)
    hi = np.minimum(np.array(ijk if upper_ijk is None else upper_ijk) + reach + 1, size)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def _check_refinable(structure: str, locked: set[str], schema: KneeSchema) -> str:
    """The structure's name, once it is known to the schema and not locked."""
    if structure not in schema.by_key:
        raise RefinementError(f"Unknown structure {structure!r}")
    if structure in locked:
        raise RefinementError(f"'{schema.by_key[structure].name}' is locked: unlock it to refine it")
    return schema.by_key[structure].name


def clicks_to_send(placed, roi) -> list[int]:
    """Positions in ``placed`` ([(ijk, positive), ...], oldest first) of the clicks an Update sends: those
    inside ``roi`` and, at a voxel clicked more than once, only the newest click (the annotator changed
    their mind there; the server would otherwise have to choose between two signs at one voxel)."""
    newest_at_voxel = {tuple(ijk): n for n, (ijk, _) in enumerate(placed)}
    (lo, hi) = roi
    return [n for n, (ijk, _) in enumerate(placed)
            if newest_at_voxel[tuple(ijk)] == n and all(a <= c < b for c, a, b in zip(ijk, lo, hi))]


def _slices(roi) -> tuple[slice, slice, slice]:
    (i0, j0, k0), (i1, j1, k1) = roi
    return slice(k0, k1), slice(j0, j1), slice(i0, i1)


def refinement_request(labels: PixelVolume, structure: str, clicks: ClickSet, locked: set[str], schema: KneeSchema,
                       reach_mm: float = REACH_MM) -> tuple[dict, np.ndarray]:
    """(params, ROI labels) for an Update of ``structure`` after its newest click."""
    name = _check_refinable(structure, locked, schema)
    placed = clicks.of(structure)
    if not placed:
        raise RefinementError(f"No clicks on '{name}' yet")
    shape = labels.array.shape
    last = check_click(placed[-1][0], shape)
    roi = roi_around(last, shape, labels.spacing, reach_mm)
    inside = [(check_click(placed[n][0], shape), placed[n][1]) for n in clicks_to_send(placed, roi)]
    params = {
        "structure": structure,
        "foreground": [list(p) for p, positive in inside if positive],
        "background": [list(p) for p, positive in inside if not positive],
        "last": list(last),
        "roi": [list(roi[0]), list(roi[1])],
        "locked": sorted(locked),
    }
    return params, np.ascontiguousarray(labels.array[_slices(roi)], dtype=np.uint8)


@dataclass(frozen=True)
class Scribbles:
    """Painted strokes for one Update: bool masks (k, j, i) on the label map's grid."""

    foreground: np.ndarray
    background: np.ndarray

    def any(self) -> bool:
        return bool(self.foreground.any() or self.background.any())


def thinned_voxels(mask: np.ndarray, spacing, cell_mm: float = SCRIBBLE_CELL_MM) -> list[tuple[int, int, int]]:
    """The voxels (i, j, k) of ``mask``, one per ``cell_mm`` cell (the first in array order): what the
    server needs to seed the same region as the whole stroke."""
    kji = np.argwhere(mask)
    if not len(kji):
        return []
    cells = np.floor(kji * np.asarray(spacing, float)[::-1] / cell_mm).astype(np.int64)
    _, first = np.unique(cells, axis=0, return_index=True)
    return [tuple(int(c) for c in kji[n][::-1]) for n in np.sort(first)]


def scribble_request(labels: PixelVolume, structure: str, scribbles: Scribbles, locked: set[str], schema: KneeSchema,
                     reach_mm: float = REACH_MM) -> tuple[dict, np.ndarray]:
    """(params, ROI labels) for an Update of ``structure`` from painted strokes: a foreground stroke says
    "this is the structure", a background one "this is not"."""
    name = _check_refinable(structure, locked, schema)
    shape = labels.array.shape
    for mask in (scribbles.foreground, scribbles.background):
        if mask.shape != shape:
            raise RefinementError(f"The scribbles' grid {list(mask.shape[::-1])} is not the image's "
                                  f"{list(shape[::-1])}")
    painted = np.argwhere(scribbles.foreground | scribbles.background)
    if not len(painted):
        raise RefinementError(f"No scribbles to update '{name}' from: paint a foreground or background stroke")
    spacing = np.asarray(labels.spacing, float)
    span_mm = (painted.max(axis=0) - painted.min(axis=0))[::-1] * spacing
    if span_mm.max() > MAX_SCRIBBLE_SPAN_MM:
        raise RefinementError(f"The scribbles span {span_mm.max():.0f} mm (at most {MAX_SCRIBBLE_SPAN_MM:.0f} mm per "
                              "Update): update one region at a time")
    roi = roi_around(painted.min(axis=0)[::-1], shape, spacing, reach_mm, upper_ijk=painted.max(axis=0)[::-1])
    params = {
        "structure": structure,
        "foreground": [list(p) for p in thinned_voxels(scribbles.foreground, labels.spacing)],
        "background": [list(p) for p in thinned_voxels(scribbles.background, labels.spacing)],
        "roi": [list(roi[0]), list(roi[1])],
        "locked": sorted(locked),
    }
    return params, np.ascontiguousarray(labels.array[_slices(roi)], dtype=np.uint8)


def merge_into_segment(labels: np.ndarray, roi, block: np.ndarray, value: int, locked_values: set[int],
                       structure: str = "") -> Edit:
    """Writes the server's ROI block into ``labels`` (in place) for structure ``value`` only, and
    returns the undo record. Whatever the block says, a voxel changes only from background to
    ``value`` or from ``value`` to background, and never when ``value`` is locked."""
    window = _slices(roi)
    current = labels[window]
    if block.shape != current.shape:
        raise RefinementError(f"The server's answer {block.shape} does not match the region {current.shape}")
    if value in locked_values:
        raise RefinementError(f"Structure {structure or value} is locked")
    mine_or_free = (current == 0) | (current == value)
    change = mine_or_free & ((block == value) != (current == value))
    new_values = np.where(block == value, value, 0).astype(labels.dtype)
    index_grid = np.arange(labels.size).reshape(labels.shape)[window]
    indices = index_grid[change]
    edit = Edit(structure, value, indices, labels.reshape(-1)[indices].copy())
    current[change] = new_values[change]
    return edit


def _ask_and_merge(client: KneeAIClient, model: str, image_id: str, labels: PixelVolume, structure: str,
                    params: dict, block: np.ndarray, locked: set[str], schema: KneeSchema) -> tuple[dict, Edit]:
    """Sends the ROI ``block`` and ``params`` to ``model``, merges the answer into ``labels.array`` (in place)
    for ``structure`` only; returns the server's params and the merge's record. Any failure raises before
    ``labels`` is touched."""
    lo = params["roi"][0]
    # The ROI block with its own geometry: a file the server could also read on its own.
    origin_lps = np.asarray(labels.origin) + np.asarray(labels.direction, float).reshape(3, 3) @ (
        np.asarray(lo, float) * np.asarray(labels.spacing))
    roi_volume = PixelVolume(block, labels.spacing, tuple(float(v) for v in origin_lps), labels.direction)
    with tempfile.TemporaryDirectory(prefix="kneeai-refine-") as tmp:
        label_file = write_volume_atomically(roi_volume, Path(tmp) / "roi_label.nii.gz")
        result = client.infer(image_id=image_id, model=model, params=params, label_file=label_file)
    try:
        answer = read_volume_file(result.label_path).array
    finally:
        result.label_path.unlink(missing_ok=True)
    if answer.shape != block.shape:
        raise VolumeError(f"The refinement answer {answer.shape} does not match the region sent {block.shape}")
    value = schema.by_key[structure].value
    locked_values = {schema.by_key[k].value for k in locked}
    edit = merge_into_segment(labels.array, params["roi"], np.asarray(answer), value, locked_values, structure)
    return result.params, edit


def refine_segment(client: KneeAIClient, image_id: str, labels: PixelVolume, structure: str, clicks: ClickSet,
                   locked: set[str], schema: KneeSchema) -> Refinement:
    """One Update: asks the server and merges its answer into ``labels.array`` (in place) for
    ``structure`` only. Returns the server's params with the merge's record (push it on an UndoStack
    to make it undoable) and the clicks sent. Any failure (server unreachable, server error, bad answer)
    raises before ``labels`` is touched."""
    params, block = refinement_request(labels, structure, clicks, locked, schema)
    answer, edit = _ask_and_merge(client, REFINEMENT_MODEL, image_id, labels, structure, params, block, locked, schema)
    return Refinement(answer, edit, tuple(clicks_to_send(clicks.of(structure), params["roi"])))


def refine_segment_from_scribbles(client: KneeAIClient, image_id: str, labels: PixelVolume, structure: str,
                                  scribbles: Scribbles, locked: set[str], schema: KneeSchema) -> Refinement:
    """One Update from painted strokes, with ``refine_segment``'s guarantees."""
    params, block = scribble_request(labels, structure, scribbles, locked, schema)
    answer, edit = _ask_and_merge(client, SCRIBBLE_MODEL, image_id, labels, structure, params, block, locked, schema)
    return Refinement(answer, edit, from_scribbles=True)
