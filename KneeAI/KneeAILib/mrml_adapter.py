"""The one KneeAILib file that touches Slicer: MRML nodes <-> KneeAILib's pixel volumes and label maps.

- ``volume_node_from_pixels``: a server image (LPS geometry) -> scalar volume node (RAS IJK->RAS).
- ``segmentation_from_labels``: a schema label map -> segmentation node, one segment per schema
  structure (empty ones too, ready to paint) with the schema's name, colour, terminology entry and a
  ``KneeAI.LabelValue`` tag that keeps its meaning under a free name ("Femur (edited)").
- ``labels_from_segmentation``: the (edited) segmentation -> label map with the schema's values in the
  reference volume's exact geometry, each segment's value by ``terminology.segment_schema_value``
  (renamed to another structure's name, a segment stands for that structure); segments the schema
  does not know, segments sharing voxels and segments standing for one structure are listed, never
  dropped or merged silently.
- ``world_points_to_ijk``: markups control points in WORLD coordinates -> voxel indices, correct when
  the volume or the markups sit under transforms.
Runs inside Slicer and on slicer-core (tests). Only the main thread may call these functions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from .schema import Group, KneeSchema, SchemaError, Structure
from .terminology import (LABEL_VALUE_TAG, SharedStructureError, item_color, schema_items, segment_id,
                          segment_schema_value, shared_structures, terminology_entry)
from .volume import PixelVolume

Logic = slicer.vtkSlicerSegmentationsModuleLogic
# Set on volumes that came from (or went to) the server, and on segmentations proposed for a server image:
# the image id, and the server it belongs to (an id means nothing to another server).
IMAGE_ID_ATTRIBUTE = "KneeAI.ImageId"
SERVER_ATTRIBUTE = "KneeAI.Server"


class UnknownSegmentsError(SchemaError):
    """Segments with voxels that no schema structure matches; submitting would lose them."""

    def __init__(self, unknown: dict[str, int]):
        self.unknown = dict(unknown)
        listing = ", ".join(f"'{name}' ({count} voxels)" for name, count in self.unknown.items())
        super().__init__(f"Segments the knee schema does not know: {listing}. Rename each to a schema "
                         f"structure name (or delete it) before submitting.")


@dataclass
class LabelExport:
    labels: PixelVolume  # schema values, the reference volume's geometry
    segment_values: dict[str, int]  # segment id -> schema value it was written with
    unknown_segments: dict[str, int] = field(default_factory=dict)  # segment name -> voxels not written
    # Segments sharing voxels (possible when the Segment Editor allows overlap): name -> shared voxels.
    # A label map holds one value per voxel, so there the segment later in the list won.
    overlapping_segments: dict[str, int] = field(default_factory=dict)
    # Structures that more than one segment with voxels stands for (e.g. one of two swapped menisci
    # renamed, the other not yet): structure name -> those segments' names. Their voxels were merged.
    shared_structures: dict[str, list[str]] = field(default_factory=dict)


def ensure_segmentation_converters() -> None:
    """Registers the binary-labelmap/closed-surface converters when nobody has (the Slicer application's
    Segmentations module does it at start; bare slicer-core does not, and without them a
    segmentation cannot even hold an empty segment)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def _numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


# -- volumes -------------------------------------------------------------------------------------
def volume_node_from_pixels(scene, volume: PixelVolume, name: str, node=None, labelmap: bool = False,
                            display: bool = True):
    """A scalar (or label map) volume node holding ``volume`` with Slicer's IJK->RAS geometry."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(_vtk_matrix(volume.ijk_to_ras()))
    if display:
        node.CreateDefaultDisplayNodes()
    return node


def pixels_from_volume_node(node) -> PixelVolume:
    """The voxels and the LOCAL geometry of a volume node (what the server stores for it)."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    return PixelVolume.from_ijk_to_ras(slicer.util.arrayFromVolume(node).copy(), _numpy_matrix(ijk_to_ras))


# -- label map -> segmentation -------------------------------------------------------------------
def segmentation_from_labels(scene, labels: PixelVolume, schema: KneeSchema, reference_volume_node,
                             name: str = "KneeAI segmentation", node=None):
    """A segmentation node with one segment per schema structure (plus groups present in ``labels``)."""
    schema.check_label_values(labels.array)
    ensure_segmentation_converters()
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    # Imported in the volume's local frame: a reused node leaves its transform until the end, or
    # Slicer would resample the labels through it.
    node.SetAndObserveTransformNodeID(None)
    segmentation = node.GetSegmentation()
    items = {i.value: i for i in schema_items(schema)}
    for item in items.values():  # replace what a previous result left
        if segmentation.GetSegment(segment_id(item)):
            segmentation.RemoveSegment(segment_id(item))
    # Import maps label value v to the (v-1)th id, creating a segment for every value up to the highest
    # one, in ONE shared layer: the ids are the schema keys, and placeholders are removed below.
    highest = max(items)
    ids = vtk.vtkStringArray()
    for value in range(1, highest + 1):
        ids.InsertNextValue(segment_id(items[value]) if value in items else f"kneeai_unused_{value}")
    labelmap_node = volume_node_from_pixels(scene, labels.with_array(labels.array.astype(np.uint8)),
                                            "KneeAI import", labelmap=True, display=False)
    try:
        if not Logic.ImportLabelmapToSegmentationNode(labelmap_node, node, ids):
            raise RuntimeError("Slicer could not import the label map into the segmentation")
    finally:
        scene.RemoveNode(labelmap_node)
    present = {int(v) for v in np.unique(labels.array)}
    for value in range(1, highest + 1):
        item = items.get(value)
        keep = item is not None and (isinstance(item, Structure) or value in present)
        sid = segment_id(item) if item is not None else f"kneeai_unused_{value}"
        if not keep:
            segmentation.RemoveSegment(sid)
            continue
        _describe_segment(segmentation.GetSegment(sid), schema, item)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    # The labels share the volume's local frame: the segmentation goes under the volume's transform.
    node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
    return node


def _describe_segment(segment, schema: KneeSchema, item: Structure | Group) -> None:
    segment.SetName(item.name)
    segment.SetColor(*item_color(schema, item))
    # Not "auto-generated": Slicer would otherwise replace them from the terminology or a palette.
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    segment.SetTerminology(terminology_entry(schema, item))
    segment.SetTag(LABEL_VALUE_TAG, str(item.value))


def schema_value_of_segment(segment, schema: KneeSchema) -> int | None:
    """Which schema value a segment stands for: its name when that is a structure's, else our tag
    (``terminology.segment_schema_value``, the rule .seg.nrrd files are read by too)."""
    tag = vtk.reference("")
    return segment_schema_value(segment.GetName(), str(tag) if segment.GetTag(LABEL_VALUE_TAG, tag) else None,
                                schema)


# -- segmentation -> label map -------------------------------------------------------------------
def labels_from_segmentation(segmentation_node, reference_volume_node, schema: KneeSchema) -> LabelExport:
    """The segmentation as a schema label map in the reference volume's exact grid.

    Slicer's export numbers segments 1..n in the order given, so each number is mapped back to the
    schema value of its segment. Voxels of segments the schema does not know are not written and are
    listed in ``unknown_segments`` (name -> voxel count); segments with voxels that stand for the same
    structure are written with its value and listed in ``shared_structures``."""
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    values = [schema_value_of_segment(segmentation.GetSegment(sid), schema) for sid in ids]
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "KneeAI export")
    try:
        if ids and not Logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap_node, reference_volume_node,
                                                          slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError("Slicer could not export the segmentation to a label map")
        reference = pixels_from_volume_node(reference_volume_node)
        if not ids:
            return LabelExport(reference.with_array(np.zeros(reference.array.shape, np.uint8)), {})
        exported = slicer.util.arrayFromVolume(labelmap_node).copy()  # the node's memory goes with the node
    finally:
        scene.RemoveNode(labelmap_node)
    if exported.shape != reference.array.shape:
        raise RuntimeError(f"Exported label map {exported.shape} does not match the volume {reference.array.shape}")
    lookup = np.zeros(len(ids) + 1, dtype=np.uint8)
    voxels = np.bincount(exported.ravel(), minlength=len(ids) + 1)  # per export number
    unknown: dict[str, int] = {}
    holders: dict[int, list[str]] = {}  # schema value -> names of the segments with voxels standing for it
    for number, (sid, value) in enumerate(zip(ids, values), start=1):
        name = segmentation.GetSegment(sid).GetName()
        if value is None:
            unknown[name] = int(voxels[number])
        else:
            lookup[number] = value
            if voxels[number]:
                holders.setdefault(value, []).append(name)
    labels = reference.with_array(lookup[exported])
    known = {sid: v for sid, v in zip(ids, values) if v is not None}
    return LabelExport(labels, known, unknown, _overlaps(segmentation_node, reference_volume_node),
                       shared_structures(holders, schema))


def _overlaps(segmentation_node, reference_volume_node) -> dict[str, int]:
    """Per segment, its voxels that another segment also holds. Segments in one layer never overlap,
    so one export per layer is enough (usually there is a single layer and nothing to do)."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfLayers() < 2:
        return {}
    scene = segmentation_node.GetScene()
    layers = []
    for layer in range(segmentation.GetNumberOfLayers()):
        ids = list(segmentation.GetSegmentIDsForLayer(layer))
        labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "KneeAI layer")
        try:
            Logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap_node, reference_volume_node,
                                               slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            layers.append((ids, slicer.util.arrayFromVolume(labelmap_node).copy()))
        finally:
            scene.RemoveNode(labelmap_node)
    shared = sum((array > 0).astype(np.uint8) for _, array in layers) > 1
    overlaps: dict[str, int] = {}
    for ids, array in layers:
        numbers, counts = np.unique(array[shared], return_counts=True)
        for number, count in zip(numbers, counts):
            if number > 0:
                overlaps[segmentation.GetSegment(ids[number - 1]).GetName()] = int(count)
    return overlaps


class OverlappingSegmentsError(SchemaError):
    """Segments that share voxels: a label map cannot say which of them a shared voxel belongs to."""

    def __init__(self, overlaps: dict[str, int]):
        self.overlaps = dict(overlaps)
        listing = ", ".join(f"'{name}' ({count} voxels)" for name, count in self.overlaps.items())
        super().__init__(f"Segments overlap: {listing}. Remove the overlap (e.g. Segment Editor with "
                         f"'Modify other segments: Overwrite all') before submitting.")


def require_known_segments(export: LabelExport) -> LabelExport:
    """The export, or a typed error when a segment the schema does not know holds voxels
    (UnknownSegmentsError), segments share voxels (OverlappingSegmentsError) or segments with voxels
    stand for one structure (SharedStructureError)."""
    with_voxels = {name: n for name, n in export.unknown_segments.items() if n > 0}
    if with_voxels:
        raise UnknownSegmentsError(with_voxels)
    if export.overlapping_segments:
        raise OverlappingSegmentsError(export.overlapping_segments)
    if export.shared_structures:
        raise SharedStructureError(export.shared_structures)
    return export


def tag_case(node, image_id: str, server_url: str) -> None:
    """Marks ``node`` as holding image ``image_id`` of the server at ``server_url``."""
    node.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
    node.SetAttribute(SERVER_ATTRIBUTE, server_url)


def case_image_id(node, server_url: str) -> str | None:
    """The image id ``node`` holds on the server at ``server_url``; None when it holds none there (untagged,
    or tagged by another server, whose image of that id is another knee: it must be uploaded)."""
    if node.GetAttribute(SERVER_ATTRIBUTE) != server_url:
        return None
    return node.GetAttribute(IMAGE_ID_ATTRIBUTE)


def require_nodes_of_case(image_id: str | None, server_url: str | None, *nodes) -> None:
    """ValueError when a node is tagged with another server image than ``image_id`` of ``server_url`` (the
    case being labelled): submitting it would store one case's segmentation as another case's label.
    Untagged nodes (made or loaded by the user) are the user's choice and pass."""
    for node in nodes:
        tagged, server = node.GetAttribute(IMAGE_ID_ATTRIBUTE), node.GetAttribute(SERVER_ATTRIBUTE)
        if tagged is not None and (tagged != image_id or server != server_url):
            raise ValueError(f"'{node.GetName()}' belongs to case {tagged} of {server or 'another server'}, not "
                             f"to the current case {image_id} of {server_url}; choose the current case's volume and "
                             f"segmentation (or segment it) first")


class EditWatcher:
    """Calls ``on_edit`` when the voxels of the one segmentation node it watches change (the Segment
    Editor's paint and erase), and never for a node it watched before: after "Next case", painting on
    the previous case's segmentation must not mark the new case edited."""

    def __init__(self, on_edit):
        self.on_edit, self.node, self._tag, self._paused = on_edit, None, None, False

    @contextlib.contextmanager
    def paused(self):
        """No ``on_edit`` inside: the Logic filling a segmentation with a proposal is not an edit."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _changed(self, *args) -> None:
        if not self._paused:
            self.on_edit()

    def watch(self, node) -> None:
        """Watches ``node`` (None: nothing) instead of the node watched so far."""
        if node is self.node:
            return
        if self.node is not None:
            self.node.RemoveObserver(self._tag)
        self.node, self._tag = node, None
        if node is not None:
            self._tag = node.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, self._changed)


# -- one segment as a mask (what an edit does) ---------------------------------------------------
def segment_mask(segmentation_node, sid: str, reference_volume_node) -> np.ndarray:
    """The segment's voxels as a bool array (k, j, i) on the reference volume's grid."""
    if segmentation_node.GetSegmentation().GetSegment(sid) is None:
        raise KeyError(f"No segment {sid!r}")
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "KneeAI segment")
    try:
        if not Logic.ExportSegmentsToLabelmapNode(segmentation_node, [sid], labelmap_node, reference_volume_node,
                                                  slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError(f"Slicer could not export segment {sid!r}")
        return slicer.util.arrayFromVolume(labelmap_node) > 0
    finally:
        scene.RemoveNode(labelmap_node)


def set_segment_mask(segmentation_node, sid: str, mask: np.ndarray, reference_volume_node) -> None:
    """Replaces a segment's voxels with ``mask`` (k, j, i) on the reference grid, through the same
    logic call the Segment Editor's effects use."""
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(_image_to_world(reference_volume_node))
    k, j, i = mask.shape
    image.SetDimensions(i, j, k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(),
                                                               deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    Logic.SetBinaryLabelmapToSegment(image, segmentation_node, sid, Logic.MODE_REPLACE, image.GetExtent())


def _image_to_world(volume_node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


# -- clicks --------------------------------------------------------------------------------------
def world_points_to_ijk(markups_node, volume_node) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices (n, 3) as (i, j, k) of the markups' control points, and whether each lies inside.

    Points are taken in world coordinates (after the markups' own transforms) and brought into the
    volume's local frame through the inverse of the volume's parent transforms, then through RAS->IJK:
    the local IJK->RAS alone would be wrong for a volume under a transform."""
    world_to_local = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volume_node.GetParentTransformNode(), world_to_local)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    ras_to_ijk = _numpy_matrix(ras_to_ijk)
    points = []
    for n in range(markups_node.GetNumberOfControlPoints()):
        world = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, world)
        local = world_to_local.TransformPoint(world)
        points.append((ras_to_ijk @ np.array([*local, 1.0]))[:3])
    ijk = np.rint(np.array(points, dtype=float).reshape(-1, 3)).astype(int)
    dims = np.array(volume_node.GetImageData().GetDimensions())
    inside = np.all((ijk >= 0) & (ijk < dims), axis=1)
    return ijk, inside


def observe_points_placed(markups_node, on_placed) -> None:
    """Calls ``on_placed(markups_node, index)`` each time a control point gets its position (placed, or
    placed again after its position was cleared); dragging a point does not call it."""
    @vtk.calldata_type(vtk.VTK_INT)  # the event's call data: the point's index
    def placed(caller, event, index):
        on_placed(caller, index)

    markups_node.AddObserver(markups_node.PointPositionDefinedEvent, placed)


def markup_click(markups_node, volume_node, index: int = -1) -> tuple[int, int, int]:
    """The voxel (i, j, k) of one control point (the newest by default), under any transforms; a
    point outside the volume is refused with a message (it would refine the wrong place)."""
    ijk, inside = world_points_to_ijk(markups_node, volume_node)
    if len(ijk) == 0:
        raise ValueError(f"'{markups_node.GetName()}' has no points")
    if not inside[index]:
        raise ValueError(f"The point {markups_node.GetNthControlPointLabel(index % len(ijk))!r} lies outside the "
                         f"volume '{volume_node.GetName()}' (voxel {ijk[index].tolist()})")
    return tuple(int(c) for c in ijk[index])
