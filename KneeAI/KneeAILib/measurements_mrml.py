"""MRML adapter for knee measurements: the thickness map on the 3D bone with a colour bar, and a table
node of the regional values. The only measurements file that imports Slicer/VTK; everything it shows
is computed by the pure ``KneeAILib.measurements`` package.

Meshes there are in patient LPS millimetres; MRML models are in RAS, so x and y are negated here.
Those millimetres are the measured volume's LOCAL frame (its voxels and geometry, as the server stores
them), so the models go under the volume's transform, as its segmentation does, to sit on the knee.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer

from KneeAILib.measurements.labelmap import LabelMap
from KneeAILib.measurements.longitudinal import CHANGE_COLUMNS, VisitComparison
from KneeAILib.measurements.measure import KneeMeasurement, PlateResult
from KneeAILib.measurements.regional_stats import COLUMNS
from KneeAILib.measurements.thickness_map_image import colormap
from KneeAILib.mrml_adapter import labels_from_segmentation, require_known_segments
from KneeAILib.schema import KneeSchema

THICKNESS_RANGE_MM = (0.0, 4.0)
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def label_map_from_segmentation(segmentation_node, volume_node, schema: KneeSchema) -> LabelMap:
    """The segmentation as a schema-valued label map on the volume's grid, in patient geometry.

    Read on the main thread (MRML); the result is plain numpy, safe to measure on a worker thread.
    Segments that are not in the schema, or that overlap, raise the adapter's clear errors."""
    export = require_known_segments(labels_from_segmentation(segmentation_node, volume_node, schema))
    return LabelMap.from_image(export.labels.to_sitk(), schema=schema)


def label_map_of_segmentation(segmentation_node, schema: KneeSchema) -> LabelMap:
    """``label_map_from_segmentation`` on the volume the segmentation was made on (its reference
    geometry), e.g. a second visit's segmentation that has its own image."""
    volume_node = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    if volume_node is None:
        raise ValueError(f"'{segmentation_node.GetName()}' has no reference volume: create it on its visit's "
                         "image (Segment Editor, or KneeAI's Segment) so its voxels have a geometry")
    return label_map_from_segmentation(segmentation_node, volume_node, schema)


def _remove_earlier(scene, name: str) -> None:
    """Removes nodes called ``name`` with their display nodes: measuring again replaces the earlier
    result instead of stacking a second copy under the same name."""
    node = scene.GetFirstNodeByName(name)
    while node is not None:
        if node.IsA("vtkMRMLDisplayableNode"):
            for display in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]:
                scene.RemoveNode(display)
        scene.RemoveNode(node)
        node = scene.GetFirstNodeByName(name)


def thickness_color_node(scene, name: str = "KneeAI cartilage thickness") -> "slicer.vtkMRMLColorTableNode":
    """A 256-entry viridis colour table (the report's colours), added once per scene."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    rgb = colormap(np.linspace(0, 1, 256), 0, 1) / 255.0
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, f"{i}", float(r), float(g), float(b), 1.0)
    node.SetAttribute("Category", "KneeAI")
    return node


def show_plate_thickness(scene, plate: PlateResult, name: str | None = None,
                         value_range: tuple[float, float] = THICKNESS_RANGE_MM,
                         change: np.ndarray | None = None, volume_node=None) -> "slicer.vtkMRMLModelNode":
    """A model node of the bone surface under one plate, coloured by thickness (mm), with a colour bar
    (replacing an earlier one of the same name). ``change``: the two-visit thickness change (mm) per
    vertex, added as the point array "thickness_change_mm" (NaN where the visits do not match) to
    colour by in the Models module. ``volume_node``: the volume measured; the model observes its
    transform (None: the model is placed in world coordinates as it is)."""
    t = plate.thickness
    poly = vtk.vtkPolyData()
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(t.vertices * LPS_TO_RAS, dtype=np.float32),
                                              deep=True))
    poly.SetPoints(points)
    cells = np.hstack([np.full((len(t.triangles), 1), 3), t.triangles]).astype(np.int64).ravel()
    polys = vtk.vtkCellArray()
    polys.ImportLegacyFormat(numpy_support.numpy_to_vtkIdTypeArray(cells, deep=True))
    poly.SetPolys(polys)
    arrays = [("thickness_mm", np.where(t.covered, t.thickness, 0.0)), ("in_plate", plate.in_plate.astype(float)),
              ("denuded", plate.denuded.astype(float))]
    if change is not None:
        arrays.append(("thickness_change_mm", change))
    for array_name, values in arrays:
        arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float32), deep=True)
        arr.SetName(array_name)
        poly.GetPointData().AddArray(arr)
    poly.GetPointData().SetActiveScalars("thickness_mm")

    name = name or f"{t.structure} thickness"
    _remove_earlier(scene, name)
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(poly)
    if volume_node is not None:
        model.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    display = scene.AddNewNodeByClass("vtkMRMLModelDisplayNode")
    model.SetAndObserveDisplayNodeID(display.GetID())
    display.SetActiveScalarName("thickness_mm")
    display.SetAndObserveColorNodeID(thickness_color_node(scene).GetID())
    display.SetScalarRangeFlag(display.UseManualScalarRange)
    display.SetScalarRange(*value_range)
    display.SetScalarVisibility(True)
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        # registered by Slicer's Colors module in the application; a bare scene (tests) needs it here
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
    legend.SetTitleText("Cartilage thickness (mm)")
    legend.SetAndObservePrimaryDisplayNode(display)
    model.AddAndObserveDisplayNodeID(legend.GetID())
    return model


def regional_table(scene, m: KneeMeasurement, name: str = "KneeAI regional cartilage") -> "slicer.vtkMRMLTableNode":
    """A table node with one row per structure and subregion, every column of the CSV export."""
    return _table(scene, m.rows, COLUMNS, name)


def _table(scene, rows: list[dict], columns: list[str], name: str) -> "slicer.vtkMRMLTableNode":
    _remove_earlier(scene, name)
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for column in columns:
        arr = vtk.vtkStringArray() if column in ("structure", "region") else vtk.vtkDoubleArray()
        arr.SetName(column)
        table.AddColumn(arr)
    table.SetNumberOfRows(len(rows))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            value = row[column]
            table.SetValue(i, j, vtk.vtkVariant(value if isinstance(value, str) else float(value)))
    for column in columns:
        unit = "mm" if column.endswith("_mm") else "mm2" if column.endswith("_mm2") else \
            "mm3" if column.endswith("_mm3") else "%" if column.endswith("percent") else ""
        if unit:
            table_node.SetColumnUnitLabel(column, unit)
    table_node.Modified()
    return table_node


def show_measurements(scene, m: KneeMeasurement, comparison: VisitComparison | None = None,
                      volume_node=None) -> tuple[list, "slicer.vtkMRMLTableNode"]:
    """Every plate's thickness model plus the regional table; returns (model nodes, table node). With a
    second visit's ``comparison`` the models also carry the change map and a table node "KneeAI thickness
    change" holds the change per structure and subregion. ``volume_node``: the (first visit's) volume
    that was measured, whose transform the models follow."""
    changes = comparison.change_maps if comparison is not None else {}
    models = [show_plate_thickness(scene, plate, f"{name} thickness", change=changes.get(name),
                                   volume_node=volume_node)
              for name, plate in m.plates.items()]
    if comparison is not None:
        _table(scene, comparison.rows, CHANGE_COLUMNS, "KneeAI thickness change")
    return models, regional_table(scene, m)
