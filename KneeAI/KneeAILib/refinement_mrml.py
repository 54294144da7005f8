"""The interactive correction in a Slicer scene: markups clicks -> Update -> that one segment.

What the module's point, Update, Undo and lock controls call. The positive and negative points of a
segment live in two markups nodes (``points_node``); every point placed there is recorded as a click
when it is placed, so the newest point is the click the Update acts on. An Update has three steps so
the module can run the network part off the main thread: ``export`` (main thread: the segmentation
as a label map on the server's grid), ``refine`` (any thread: ``refinement.refine_segment``, numpy and
HTTP only; it changes nothing the main thread shares) and ``apply`` (main thread: of the voxels the
refinement changed, those that are background or that segment's NOW are written, into that segment
alone, with ``set_segment_mask``, and only then the undo step is recorded). So locked and other
segments are never touched in the scene either, not even when the annotator paints or locks them
while the server works, and an Update that is cancelled or fails leaves no undo step behind. Undo
writes back the segment as it was before the last applied Update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import mrml_adapter
from .refinement import ClickSet, Edit, Refinement, RefinementError, UndoStack, refine_segment
from .schema import KneeSchema
from .terminology import segment_id
from .volume import PixelVolume


OTHER = 255  # in _scene_labels: a voxel of a segment the schema does not know (no schema value is 255)


@dataclass
class SceneRefinement:
    """One case's interactive correction state in the scene."""

    image_id: str
    segmentation_node: object
    volume_node: object
    schema: KneeSchema
    clicks: ClickSet = field(default_factory=ClickSet)
    locked: set[str] = field(default_factory=set)
    undo_stack: UndoStack = field(default_factory=UndoStack)
    on_click_error: Callable[[str], None] = print  # how a refused point is reported (the module shows it)
    _points_nodes: dict = field(default_factory=dict, repr=False)

    def points_node(self, structure: str, positive: bool):
        """The markups node of ``structure``'s positive (or negative) points; each point placed in it
        becomes a click, or is reported through ``on_click_error`` (e.g. outside the volume). A node of
        the same name left by an earlier case is replaced: its points belong to that case."""
        key = (structure, positive)
        if key in self._points_nodes and self._points_nodes[key].GetScene() is not None:  # not deleted
            return self._points_nodes[key]
        scene = self.volume_node.GetScene()
        name = f"KneeAI {self.schema.by_key[structure].name} {'+' if positive else '-'}"
        earlier = scene.GetFirstNodeByName(name)
        if earlier is not None:
            scene.RemoveNode(earlier)  # and with it the earlier case's observer
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.CreateDefaultDisplayNodes()
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetSelectedColor((0.1, 0.8, 0.1) if positive else (0.9, 0.1, 0.1))
        node.AddObserver(node.PointPositionDefinedEvent,
                         lambda caller, event: self._placed(structure, caller, positive))
        self._points_nodes[key] = node
        return node

    def _placed(self, structure: str, node, positive: bool) -> None:
        try:
            self.add_click_from_markups(structure, node, positive)
        except ValueError as e:
            self.on_click_error(str(e))

    def add_click_from_markups(self, structure: str, markups_node, positive: bool) -> tuple[int, int, int]:
        """Records the markups node's newest point as a click on ``structure`` (voxel, under transforms)."""
        ijk = mrml_adapter.markup_click(markups_node, self.volume_node)
        self.clicks.add(structure, ijk, positive)
        return ijk

    def export(self) -> PixelVolume:
        """The segmentation as a schema label map on the volume's grid (main thread: reads MRML)."""
        return mrml_adapter.labels_from_segmentation(self.segmentation_node, self.volume_node, self.schema).labels

    def refine(self, client, structure: str, labels: PixelVolume) -> Refinement:
        """The server's refinement merged into ``labels.array`` (the ``export`` snapshot) for ``structure``
        only (any thread: no MRML, no shared state changed). Any failure raises before ``labels`` changes."""
        return refine_segment(client, self.image_id, labels, structure, self.clicks, self.locked, self.schema)

    def apply(self, refinement: Refinement, labels: PixelVolume) -> int:
        """Writes ``refinement`` (from ``refine`` on the snapshot ``labels``) into its segment as the scene is
        NOW (main thread), records the undo step, returns the voxels written. Of the voxels the refinement
        changed only those that are background or this segment's now are written: a Segment Editor stroke
        made on any other segment while the server worked is kept. A segment locked meanwhile is refused."""
        structure = refinement.structure
        item = self.schema.by_key[structure]
        if structure in self.locked:
            raise RefinementError(f"'{item.name}' was locked while the server worked: its update was not applied")
        now = self._scene_labels().reshape(-1)
        changed = refinement.edit.indices
        indices = changed[np.isin(now[changed], (0, item.value))]
        edit = Edit(structure, item.value, indices, now[indices].copy())
        mask = mrml_adapter.segment_mask(self.segmentation_node, segment_id(item), self.volume_node)
        mask.reshape(-1)[indices] = labels.array.reshape(-1)[indices] == item.value
        mrml_adapter.set_segment_mask(self.segmentation_node, segment_id(item), mask, self.volume_node)
        self.undo_stack.push(edit)
        return len(indices)

    def update(self, client, structure: str) -> dict:
        """The three steps in one call: refines ``structure`` from its clicks; on any failure the scene is
        left as it was. Returns the server's params."""
        labels = self.export()
        refinement = self.refine(client, structure, labels)
        self.apply(refinement, labels)
        return refinement.params

    def undo(self) -> str | None:
        """Reverts the last Update (whichever segment it refined); returns that segment's key."""
        labels = self._scene_labels()
        edit = self.undo_stack.undo(labels)
        if edit is None:
            return None
        self._write_segment(edit.structure, labels)
        return edit.structure

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
