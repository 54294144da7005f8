"""The interactive correction in a Slicer scene: markups clicks -> Update -> that one segment.

What the module's point, Update, Undo and lock controls call. The positive and negative points of a
segment live in two markups nodes (``points_node``), and those points ARE its clicks: an Update sends
the points standing when it starts, where they stand then (a point deleted is not sent, a point dragged
is sent where it was dragged to), in the order they were placed, so the newest placed point is the
click the Update acts on. An Update has three steps so the module can run the network part off the
main thread: ``export`` (main thread: the segmentation as a label map on the server's grid, with the
clicks as the points stand: a ``Snapshot``), ``refine`` (any thread: ``refinement.refine_segment``,
numpy and HTTP only; it changes nothing the main thread shares) and ``apply`` (main thread: of the
voxels the refinement changed, those that are background or that segment's NOW are written, into that
segment alone, with ``set_segment_mask``, and only then the undo step is recorded). So locked and other
segments are never touched in the scene either, not even when the annotator paints or locks them
while the server works, and an Update that is cancelled or fails leaves no undo step behind. Undo
writes back the segment as it was before the last applied Update and deletes the points that produced
that Update (the server makes every click's voxel follow its sign, so a point left standing would redo
part of the undone change at the next Update); it refuses while that segment is locked.

Scribbles: the annotator paints foreground/background strokes (Segment Editor's Paint) into the two
segments of a separate segmentation node (``scribbles_node``), so they are never submitted as labels.
When strokes are painted, an Update refines from them instead of the points (``knee_scribbles``), and
once it is applied the strokes it used are erased (those painted while the server worked stay).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import mrml_adapter
from .refinement import (ClickSet, Edit, Refinement, RefinementError, Scribbles, UndoStack, refine_segment,
                         refine_segment_from_scribbles)
from .schema import KneeSchema
from .terminology import segment_id
from .volume import PixelVolume


OTHER = 255  # in _scene_labels: a voxel of a segment the schema does not know (no schema value is 255)

# A markups point as a click of an undo step: (positive, control point ID, voxel (i, j, k) when sent).
PointClick = tuple[bool, str, tuple[int, int, int]]

SCRIBBLES_NODE_NAME = "KneeAI scribbles"
# Segment ID -> (name, colour) of the scribbles node's two segments; "foreground" is the positive one.
SCRIBBLE_SEGMENTS = {"foreground": ("Foreground scribble", (0.1, 0.8, 0.1)),
                     "background": ("Background scribble", (0.9, 0.1, 0.1))}


@dataclass(frozen=True)
class Snapshot(PixelVolume):
    """What one Update works from, taken on the main thread by ``export``: the segmentation as a label map
    (this PixelVolume) and the clicks as the points stood then, so the worker thread reads no MRML."""

    clicks: ClickSet = field(default_factory=ClickSet)
    points: dict = field(default_factory=dict)  # structure -> [PointClick, ...], in ``clicks.of`` order
    refused: dict = field(default_factory=dict)  # structure -> why one of its points cannot be sent
    scribbles: Scribbles | None = None  # the strokes painted then; None when there are none


@dataclass
class SceneRefinement:
    """One case's interactive correction state in the scene."""

    image_id: str
    segmentation_node: object
    volume_node: object
    schema: KneeSchema
    locked: set[str] = field(default_factory=set)
    undo_stack: UndoStack = field(default_factory=UndoStack)
    on_click_error: Callable[[str], None] = print  # how a refused point is reported (the module shows it)
    _points_nodes: dict = field(default_factory=dict, repr=False)
    # (structure, positive, control point ID) -> when it was placed: points of two nodes in one order.
    _placed_at: dict = field(default_factory=dict, repr=False)
    _placements: itertools.count = field(default_factory=itertools.count, repr=False)
    _scribbles_node: object = field(default=None, repr=False)

    def points_node(self, structure: str, positive: bool):
        """The markups node of ``structure``'s positive (or negative) points; the points in it are the
        clicks an Update sends. A point placed outside the volume is reported through ``on_click_error``
        when it is placed (and an Update of that segment is refused while it stands there). A node of
        the same name left by an earlier case is replaced: its points belong to that case."""
        key = (structure, positive)
        if key in self._points_nodes and self._points_nodes[key].GetScene() is not None:  # not deleted
            return self._points_nodes[key]
        name = f"KneeAI {self.schema.by_key[structure].name} {'+' if positive else '-'}"
        node = self._new_node("vtkMRMLMarkupsFiducialNode", name)  # the earlier case's observer goes with its node
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetSelectedColor((0.1, 0.8, 0.1) if positive else (0.9, 0.1, 0.1))
        mrml_adapter.observe_points_placed(node, lambda caller, index: self._placed(structure, positive, caller, index))
        self._points_nodes[key] = node
        return node

    def scribbles_node(self):
        """The segmentation node the annotator paints strokes into (segments "foreground" and "background",
        see SCRIBBLE_SEGMENTS), on the volume's grid. A node of the same name left by an earlier case is
        replaced: its strokes belong to that case."""
        node = self._scribbles_node
        if node is not None and node.GetScene() is not None:
            return node
        node = self._new_node("vtkMRMLSegmentationNode", SCRIBBLES_NODE_NAME)
        node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
        for sid, (name, colour) in SCRIBBLE_SEGMENTS.items():
            node.GetSegmentation().AddEmptySegment(sid, name, colour)
        self._scribbles_node = node
        return node

    def _new_node(self, class_name: str, name: str):
        """A new node of this case, with its display nodes; a node of that name left by an earlier case
        is removed (what it holds belongs to that case)."""
        scene = self.volume_node.GetScene()
        earlier = scene.GetFirstNodeByName(name)
        if earlier is not None:
            scene.RemoveNode(earlier)
        node = scene.AddNewNodeByClass(class_name, name)
        node.CreateDefaultDisplayNodes()
        return node

    def _painted(self) -> Scribbles | None:
        """The strokes standing in the scribbles node (main thread); None when nothing is painted."""
        node = self._scribbles_node
        if node is None or node.GetScene() is None:
            return None
        masks = [mrml_adapter.segment_mask(node, sid, self.volume_node)
                 if node.GetSegmentation().GetSegment(sid) is not None else None for sid in SCRIBBLE_SEGMENTS]
        shape = next((m.shape for m in masks if m is not None), None)
        if shape is None:  # the annotator deleted both segments
            return None
        scribbles = Scribbles(*(m if m is not None else np.zeros(shape, bool) for m in masks))
        return scribbles if scribbles.any() else None

    def _erase_strokes(self, used: Scribbles) -> None:
        """Erases the strokes an applied Update used; strokes painted since stay."""
        node = self._scribbles_node
        if node is None or node.GetScene() is None:
            return
        for sid, mask in zip(SCRIBBLE_SEGMENTS, (used.foreground, used.background)):
            if node.GetSegmentation().GetSegment(sid) is not None and mask.any():
                now = mrml_adapter.segment_mask(node, sid, self.volume_node)
                mrml_adapter.set_segment_mask(node, sid, now & ~mask, self.volume_node)

    def _placed(self, structure: str, positive: bool, node, index: int) -> None:
        """A point got its position (placed, or placed again after its position was cleared): it is now
        the newest click. Dragging it later keeps its place in the order."""
        self._placed_at[(structure, positive, node.GetNthControlPointID(index))] = next(self._placements)
        try:
            mrml_adapter.markup_click(node, self.volume_node, index)
        except ValueError as e:
            self.on_click_error(str(e))

    def clicks_now(self) -> ClickSet:
        """The clicks an Update started now would send (main thread: reads the points nodes)."""
        return self._standing_points()[0]

    def _standing_points(self) -> tuple[ClickSet, dict, dict]:
        """(clicks, structure -> [PointClick, ...] in the same order, structure -> why a point is refused)
        from the points standing in this case's points nodes, oldest placement first."""
        standing = []
        for (structure, positive), node in self._points_nodes.items():
            if node.GetScene() is None:  # the annotator deleted the whole node
                continue
            for index in range(node.GetNumberOfControlPoints()):
                if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
                    continue  # still being placed, or its position was cleared
                point_id = node.GetNthControlPointID(index)
                # A point this session did not see placed (none expected) counts as placed now.
                placed_at = self._placed_at.setdefault((structure, positive, point_id), next(self._placements))
                ijk, outside = None, None
                try:
                    ijk = mrml_adapter.markup_click(node, self.volume_node, index)
                except ValueError as e:
                    outside = str(e)
                standing.append((placed_at, structure, positive, point_id, ijk, outside))
        clicks, points, refused = ClickSet(), {}, {}
        for _, structure, positive, point_id, ijk, outside in sorted(standing, key=lambda point: point[0]):
            if outside is not None:
                refused.setdefault(structure, outside)
                continue
            clicks.add(structure, ijk, positive)
            points.setdefault(structure, []).append((positive, point_id, ijk))
        return clicks, points, refused

    def export(self) -> Snapshot:
        """The segmentation as a schema label map on the volume's grid, with the clicks as the points stand
        now and the strokes painted now (main thread: reads MRML)."""
        labels = mrml_adapter.labels_from_segmentation(self.segmentation_node, self.volume_node, self.schema).labels
        clicks, points, refused = self._standing_points()
        return Snapshot(labels.array, labels.spacing, labels.origin, labels.direction, clicks, points, refused,
                        self._painted())

    def refine(self, client, structure: str, labels: Snapshot) -> Refinement:
        """The server's refinement merged into ``labels.array`` (the ``export`` snapshot) for ``structure``
        only, from the snapshot's strokes when any were painted, else from its clicks (any thread: no
        MRML, no shared state changed). Any failure raises before ``labels`` changes."""
        if labels.scribbles is not None:
            return refine_segment_from_scribbles(client, self.image_id, labels, structure, labels.scribbles,
                                                 self.locked, self.schema)
        if structure in labels.refused:
            raise RefinementError(f"{labels.refused[structure]}: move that point into the volume or delete it")
        return refine_segment(client, self.image_id, labels, structure, labels.clicks, self.locked, self.schema)

    def apply(self, refinement: Refinement, labels: Snapshot) -> int:
        """Writes ``refinement`` (from ``refine`` on the snapshot ``labels``) into its segment as the scene is
        NOW (main thread), records the undo step, returns the voxels written. Of the voxels the refinement
        changed only those that are background or this segment's now are written: a Segment Editor stroke
        made on any other segment while the server worked is kept. A segment locked meanwhile is refused.
        The step records the points that produced it: those the request carried that no earlier step
        still on the stack took at the same voxel."""
        structure = refinement.structure
        item = self.schema.by_key[structure]
        if structure in self.locked:
            raise RefinementError(f"'{item.name}' was locked while the server worked: its update was not applied")
        now = self._scene_labels().reshape(-1)
        changed = refinement.edit.indices
        indices = changed[np.isin(now[changed], (0, item.value))]
        sent = [labels.points[structure][n] for n in refinement.clicks_sent]
        taken_earlier = {click for step in self.undo_stack if step.structure == structure for click in step.clicks}
        edit = Edit(structure, item.value, indices, now[indices].copy(),
                    tuple(click for click in sent if click not in taken_earlier))
        mask = mrml_adapter.segment_mask(self.segmentation_node, segment_id(item), self.volume_node)
        mask.reshape(-1)[indices] = labels.array.reshape(-1)[indices] == item.value
        mrml_adapter.set_segment_mask(self.segmentation_node, segment_id(item), mask, self.volume_node)
        self.undo_stack.push(edit)
        if refinement.from_scribbles and labels.scribbles is not None:
            self._erase_strokes(labels.scribbles)
        return len(indices)

    def update(self, client, structure: str) -> dict:
        """The three steps in one call: refines ``structure`` from its strokes or clicks; on any failure the
        scene is left as it was. Returns the server's params."""
        labels = self.export()
        refinement = self.refine(client, structure, labels)
        self.apply(refinement, labels)
        return refinement.params

    def undo(self) -> str | None:
        """Reverts the last Update (whichever segment it refined) and deletes the points that produced it;
        returns that segment's key. Refused, with nothing changed, while that segment is locked."""
        step = self.undo_stack.last
        if step is None:
            return None
        if step.structure in self.locked:
            raise RefinementError(f"'{self.schema.by_key[step.structure].name}' is locked: unlock it to undo "
                                  "its last update")
        labels = self._scene_labels()
        edit = self.undo_stack.undo(labels, self.locked)
        self._write_segment(edit.structure, labels)
        self._delete_points(edit.structure, edit.clicks)
        return edit.structure

    def _delete_points(self, structure: str, clicks) -> None:
        """Deletes the points of an undone step (those the annotator has not deleted already)."""
        for positive, point_id, _ in clicks:
            node = self._points_nodes.get((structure, positive))
            if node is None or node.GetScene() is None:
                continue
            index = node.GetNthControlPointIndexByID(point_id)
            if index >= 0:
                node.RemoveNthControlPoint(index)
            self._placed_at.pop((structure, positive, point_id), None)

    def _scene_labels(self) -> np.ndarray:
        """The segmentation as it is now, one schema value per voxel (main thread). Segments the schema
        does not know (the annotator's own) export as background: their voxels are marked OTHER, so that
        no refinement or undo takes them either."""
        export = mrml_adapter.labels_from_segmentation(self.segmentation_node, self.volume_node, self.schema)
        labels = export.labels.array
        segmentation = self.segmentation_node.GetSegmentation()
        for sid in (segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())):
            if sid not in export.segment_values:
                labels[mrml_adapter.segment_mask(self.segmentation_node, sid, self.volume_node)] = OTHER
        return labels

    def _write_segment(self, structure: str, labels) -> None:
        value = self.schema.by_key[structure].value
        sid = segment_id(self.schema.by_key[structure])
        mrml_adapter.set_segment_mask(self.segmentation_node, sid, labels == value, self.volume_node)
