"""The interactive correction in a Slicer scene: markups clicks -> Update -> that one segment.

What the module's point, Update, Undo and lock controls call. The positive and negative points of a
segment live in two markups nodes (``points_node``); every point placed there is recorded as a click
when it is placed, so the newest point is the click the Update acts on. An Update has three steps so
the module can run the network part off the main thread: ``export`` (main thread: the segmentation
as a label map on the server's grid), ``refine`` (any thread: ``refinement.refine_segment``, numpy and
HTTP only) and ``apply`` (main thread: only the voxels the refinement changed are written, into that
segment alone, with ``set_segment_mask``), so locked and other segments are never touched in the scene
either. Undo writes back the segment as it was before the last Update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import mrml_adapter
from .refinement import ClickSet, UndoStack, refine_segment
from .schema import KneeSchema
from .terminology import segment_id
from .volume import PixelVolume


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

    def refine(self, client, structure: str, labels: PixelVolume) -> dict:
        """The server's refinement merged into ``labels.array`` for ``structure`` only (any thread: no
        MRML). Any failure raises before ``labels`` changes, and the scene is not touched here."""
        return refine_segment(client, self.image_id, labels, structure, self.clicks, self.locked, self.schema,
                              self.undo_stack)

    def apply(self, structure: str, labels: PixelVolume) -> None:
        """Writes what the last ``refine`` changed (the voxels of its undo record) into that segment, and
        only it, as the segment is NOW (main thread): a Segment Editor stroke made on it while the server
        worked is kept, not overwritten by the snapshot ``export`` took."""
        item = self.schema.by_key[structure]
        changed = self.undo_stack.last.indices
        mask = mrml_adapter.segment_mask(self.segmentation_node, segment_id(item), self.volume_node)
        mask.reshape(-1)[changed] = labels.array.reshape(-1)[changed] == item.value
        mrml_adapter.set_segment_mask(self.segmentation_node, segment_id(item), mask, self.volume_node)

    def update(self, client, structure: str) -> dict:
        """The three steps in one call: refines ``structure`` from its clicks; on any failure the scene is
        left as it was."""
        labels = self.export()
        params = self.refine(client, structure, labels)
        self.apply(structure, labels)
        return params

    def undo(self) -> str | None:
        """Reverts the last Update (whichever segment it refined); returns that segment's key."""
        export = mrml_adapter.labels_from_segmentation(self.segmentation_node, self.volume_node, self.schema)
        labels = export.labels.array
        edit = self.undo_stack.undo(labels)
        if edit is None:
            return None
        self._write_segment(edit.structure, labels)
        return edit.structure

    def _write_segment(self, structure: str, labels) -> None:
        value = self.schema.by_key[structure].value
        sid = segment_id(self.schema.by_key[structure])
        mrml_adapter.set_segment_mask(self.segmentation_node, sid, labels == value, self.volume_node)
