"""MRML adapters on the real MRML library (slicer-core), with synthetic oblique volumes: geometry
(LPS <-> RAS), label map <-> segmentation with the schema, and clicks in world coordinates under
transforms."""

from __future__ import annotations

import numpy as np
import pytest
import vtk

import slicer
from KneeAILib import mrml_adapter
from KneeAILib.terminology import LABEL_VALUE_TAG, terminology_entry
from KneeAILib.volume import PixelVolume


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def oblique_volume(shape=(12, 14, 16), seed=0) -> PixelVolume:
    direction = rotation("z", 25) @ rotation("x", -10)
    array = np.random.default_rng(seed).integers(0, 3000, shape).astype(np.int16)
    return PixelVolume(array, (0.4, 0.5, 1.5), (12.5, -40.0, 7.25), tuple(direction.ravel()))


def linear_transform_node(scene, matrix: np.ndarray):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, matrix[r, c])
    node.SetMatrixTransformToParent(m)
    return node


def test_volume_node_geometry_is_lps_flipped_to_ras(scene):
    volume = oblique_volume()
    node = mrml_adapter.volume_node_from_pixels(scene, volume, "oblique")
    image = volume.to_sitk()
    for index in [(0, 0, 0), (15, 3, 7), (4, 13, 11)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = [0.0, 0.0, 0.0, 1.0]
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        ras = matrix.MultiplyPoint([*index, 1.0])[:3]
        assert np.allclose(ras, lps * [-1, -1, 1], atol=1e-6)
    back = mrml_adapter.pixels_from_volume_node(node)
    assert back.same_geometry(volume, tolerance=1e-9)
    assert np.array_equal(back.array, volume.array)


def test_label_map_to_segmentation_and_back_with_the_schema(scene, schema):
    volume = oblique_volume()
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[2:5, 3:8, 4:9] = schema.value_of("femur")
    labels[6:8, 3:8, 4:9] = schema.value_of("femoral_cartilage")
    labels[9, 10, 11] = schema.value_of("tibial_cartilage")  # the group value (unsplit tibial cartilage)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == [s.key for s in schema.structures] + ["tibial_cartilage"]  # every structure, empty ones too
    femur = segmentation.GetSegment("femur")
    assert femur.GetName() == "Femur" and np.allclose(femur.GetColor(), schema.by_key["femur"].color_float)

    # A renamed segment keeps its meaning (our tag); painting into an empty one is exported with its value.
    femur.SetName("My femur")
    patella_mask = np.zeros(labels.shape, bool)
    patella_mask[10, 1:3, 1:3] = True
    mrml_adapter.set_segment_mask(node, "patella", patella_mask, volume_node)
    export = mrml_adapter.labels_from_segmentation(node, volume_node, schema)
    expected = labels.copy()
    expected[patella_mask] = schema.value_of("patella")
    assert np.array_equal(export.labels.array, expected)
    assert export.labels.same_geometry(volume)
    assert export.unknown_segments == {}


def test_unknown_segments_are_reported_not_dropped(scene, schema):
    volume = oblique_volume()
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[1:4, 1:4, 1:4] = schema.value_of("tibia")
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    node.GetSegmentation().AddEmptySegment("extra", "Osteophyte", (1, 0, 0))
    mask = np.zeros(labels.shape, bool)
    mask[8:10, 8:10, 8:10] = True
    mrml_adapter.set_segment_mask(node, "extra", mask, volume_node)
    node.GetSegmentation().AddEmptySegment("empty_extra", "Notes", (0, 1, 0))  # empty: harmless

    export = mrml_adapter.labels_from_segmentation(node, volume_node, schema)
    assert export.unknown_segments == {"Osteophyte": 8, "Notes": 0}
    assert np.array_equal(export.labels.array, labels)  # the unknown voxels were not given a value
    with pytest.raises(mrml_adapter.UnknownSegmentsError, match="Osteophyte.*8 voxels"):
        mrml_adapter.require_known_segments(export)

    # Named after a schema structure (no tag, e.g. made by hand), a segment is known by its name.
    node.GetSegmentation().GetSegment("extra").SetName("Medial meniscus")
    export = mrml_adapter.require_known_segments(mrml_adapter.labels_from_segmentation(node, volume_node, schema))
    assert (export.labels.array == schema.value_of("medial_meniscus")).sum() == 8


def test_terminology_entry_is_what_slicer_serializes(schema):
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for structure in schema.structures:
        entry = slicer.vtkSlicerTerminologyEntry()
        entry.SetTerminologyContextName(schema.name)
        for code, target in ((structure.category, entry.GetCategoryObject()), (structure.type, entry.GetTypeObject()),
                             (structure.region, entry.GetRegionObject())):
            if code is not None:
                target.SetCodingSchemeDesignator(code.scheme)
                target.SetCodeValue(code.value)
                target.SetCodeMeaning(code.meaning)
        if structure.region is not None:
            entry.SetRegionContextName("Anatomic codes - DICOM master list")
        assert terminology_entry(schema, structure) == logic.SerializeTerminologyEntry(entry)


def test_clicks_in_world_coordinates_map_to_voxels_under_transforms(scene):
    volume = oblique_volume(shape=(20, 24, 28))
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation("y", 30) @ rotation("z", -50)
    to_parent[:3, 3] = [35.0, -12.0, 60.0]
    volume_node.SetAndObserveTransformNodeID(linear_transform_node(scene, to_parent).GetID())
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups_parent = np.eye(4)
    markups_parent[:3, :3] = rotation("x", 40)
    markups_parent[:3, 3] = [-5.0, 8.0, 3.0]
    markups.SetAndObserveTransformNodeID(linear_transform_node(scene, markups_parent).GetID())

    voxels = np.array([[0, 0, 0], [27, 23, 19], [5, 17, 9], [14, 2, 18]])
    ijk_to_ras = volume.ijk_to_ras()
    for voxel in voxels:
        # Where the annotator sees this voxel: the volume's transform applied to its local RAS,
        # plus a little jitter inside the voxel (a click never lands exactly on the centre).
        world = to_parent @ ijk_to_ras @ np.array([*(voxel + [0.3, -0.2, 0.4]), 1.0])
        markups.AddControlPointWorld(vtk.vtkVector3d(*world[:3]))
    outside = to_parent @ ijk_to_ras @ np.array([40.0, 5.0, 5.0, 1.0])
    markups.AddControlPointWorld(vtk.vtkVector3d(*outside[:3]))

    ijk, inside = mrml_adapter.world_points_to_ijk(markups, volume_node)
    assert np.array_equal(ijk[:4], voxels)
    assert inside.tolist() == [True, True, True, True, False]

    # The local matrix alone (ignoring the transforms) would put the clicks elsewhere.
    naive = np.rint([(np.linalg.inv(ijk_to_ras) @ np.array([*markups.GetNthControlPointPosition(n), 1.0]))[:3]
                     for n in range(4)]).astype(int)
    assert not np.array_equal(naive, voxels)


def test_segmentation_follows_the_volume_transform(scene, schema):
    volume = oblique_volume()
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation("z", 90)
    to_parent[:3, 3] = [10, 20, 30]
    transform = linear_transform_node(scene, to_parent)
    volume_node.SetAndObserveTransformNodeID(transform.GetID())
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[3:6, 4:9, 5:11] = schema.value_of("patella")
    node = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    assert node.GetTransformNodeID() == transform.GetID()
    export = mrml_adapter.labels_from_segmentation(node, volume_node, schema)
    assert np.array_equal(export.labels.array, labels)

    # A new proposal into the same node (re-segmenting) replaces the schema segments, still unresampled.
    second = np.zeros_like(labels)
    second[1:4, 2:6, 7:12] = schema.value_of("lateral_meniscus")
    again = mrml_adapter.segmentation_from_labels(scene, volume.with_array(second), schema, volume_node, node=node)
    assert again is node and node.GetTransformNodeID() == transform.GetID()
    assert np.array_equal(mrml_adapter.labels_from_segmentation(node, volume_node, schema).labels.array, second)


def test_segment_tag_records_the_schema_value(scene, schema):
    volume = oblique_volume()
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume.with_array(np.zeros(volume.array.shape, np.uint8)),
                                                 schema, volume_node)
    for structure in schema.structures:
        tag = vtk.reference("")
        assert node.GetSegmentation().GetSegment(structure.key).GetTag(LABEL_VALUE_TAG, tag)
        assert str(tag) == str(structure.value)
