"""The interactive correction in a Slicer scene: markups clicks -> Update -> that one segment.

What the module's Update and Undo buttons call. The positive and negative points of a segment live in
two markups nodes; the newest point placed is the click the Update acts on. The segmentation is
exported to a label map (the server's grid), refined through ``refinement.refine_segment`` and only
the refined segment is written back (``set_segment_mask``): locked and other segments are never
touched in the scene either. Undo writes back the segment as it was before the last Update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import mrml_adapter
from .refinement import ClickSet, UndoStack, refine_segment
from .schema import KneeSchema
from .terminology import segment_id


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

    def add_click_from_markups(self, structure: str, markups_node, positive: bool) -> tuple[int, int, int]:
        """Records the markups node's newest point as a click on ``structure`` (voxel, under transforms)."""
        ijk = mrml_adapter.markup_click(markups_node, self.volume_node)
        self.clicks.add(structure, ijk, positive)
        return ijk

    def update(self, client, structure: str) -> dict:
        """Refines ``structure`` from its clicks; on any failure the scene is left as it was."""
        export = mrml_adapter.labels_from_segmentation(self.segmentation_node, self.volume_node, self.schema)
        labels = export.labels
        params = refine_segment(client, self.image_id, labels, structure, self.clicks, self.locked, self.schema,
                                self.undo_stack)
        self._write_segment(structure, labels.array)
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
