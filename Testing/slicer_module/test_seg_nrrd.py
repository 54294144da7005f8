"""Slicer segmentation files without Slicer: what KneeAILib writes Slicer reads, and back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
from KneeAILib import mrml_adapter
from KneeAILib.schema import SchemaError
from KneeAILib.seg_nrrd import read_label_file, segment_extent, write_seg_nrrd
from KneeAILib.terminology import segment_schema_value
from KneeAILib.volume import PixelVolume


def small_labels(schema) -> PixelVolume:
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:3, 2:5, 3:7] = schema.value_of("tibia")
    labels[4, 6, 8] = schema.value_of("tibial_cartilage")
    return PixelVolume(labels, (0.5, 0.5, 2.0), (3.0, 4.0, 5.0), (0, 0, 1, 1, 0, 0, 0, 1, 0))


def test_extent_is_i_j_k_bounds():
    mask = np.zeros((6, 8, 10), bool)
    mask[1:3, 2:5, 3:7] = True
    assert segment_extent(mask) == "3 6 2 4 1 2"
    assert segment_extent(np.zeros((2, 2, 2), bool)) == "0 -1 0 -1 0 -1"


def test_written_file_opens_in_slicer_with_groups_and_reads_back(tmp_path, schema, scene):
    volume = small_labels(schema)
    path = tmp_path / "small.seg.nrrd"
    write_seg_nrrd(volume, schema, path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetSegment("tibial_cartilage").GetName() == schema.group_by_key["tibial_cartilage"].name
    assert segmentation.GetNumberOfSegments() == len(schema.structures) + 1
    back = read_label_file(path, schema)
    assert np.array_equal(back.array, volume.array) and back.same_geometry(volume)


def test_a_file_slicer_wrote_reads_back_with_schema_values(tmp_path, schema, scene):
    volume = small_labels(schema)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume, schema, volume_node)
    node.GetSegmentation().GetSegment("tibia").SetName("Tibia (checked)")  # renamed: the tag still says tibia
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    path = tmp_path / "slicer_wrote.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    back = read_label_file(path, schema)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.origin, volume.origin) and np.allclose(back.direction, volume.direction)

    node.GetSegmentation().AddEmptySegment("mystery", "Mystery", (1, 1, 0))
    mask = np.zeros(volume.array.shape, bool)
    mask[0, 0, 0] = True
    mrml_adapter.set_segment_mask(node, "mystery", mask, volume_node)
    assert storage.WriteData(node)
    with pytest.raises(SchemaError, match="Mystery"):
        read_label_file(path, schema)


def test_a_segment_renamed_in_slicer_to_another_structure_reads_back_as_that_structure(tmp_path, schema, scene):
    """The rule of the Slicer module's submit (mrml_adapter): a structure's name beats the tag."""
    volume = small_labels(schema)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume, schema, volume_node)
    node.GetSegmentation().GetSegment("tibia").SetName("Femur")  # the tibia's voxels are the femur
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    path = tmp_path / "renamed.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    back = read_label_file(path, schema)
    assert np.array_equal(back.array == schema.value_of("femur"), volume.array == schema.value_of("tibia"))

    # A second segment with voxels that also stands for the femur: refused, not merged into one label.
    femur = np.zeros(volume.array.shape, bool)
    femur[5, 0, 0] = True
    mrml_adapter.set_segment_mask(node, "femur", femur, volume_node)
    assert storage.WriteData(node)
    with pytest.raises(SchemaError, match="'Femur', 'Femur' all stand for Femur"):
        read_label_file(path, schema)


def test_the_one_rule_for_a_segments_schema_value(schema):
    femur, tibia = schema.value_of("femur"), schema.value_of("tibia")
    assert segment_schema_value("Femur (edited)", f" {tibia} ", schema) == tibia  # a free name: the tag says
    assert segment_schema_value(" FEMUR ", str(tibia), schema) == femur  # a structure's name: the name says
    assert segment_schema_value("femur", None, schema) == femur  # untagged, made by hand
    for tag in (None, "", "x", "³", "0", "250"):  # no usable tag (not a number, background, not in the schema)
        assert segment_schema_value("Osteophyte", tag, schema) is None


def test_overlapping_segments_in_a_slicer_file_are_refused(tmp_path, schema, scene):
    volume = small_labels(schema)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "image")
    node = mrml_adapter.segmentation_from_labels(scene, volume, schema, volume_node)
    femur = np.zeros(volume.array.shape, bool)
    femur[1, 2, 3] = True  # a tibia voxel too: Slicer keeps both, in two layers
    mrml_adapter.set_segment_mask(node, "femur", femur, volume_node)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    path = tmp_path / "overlap.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    with pytest.raises(SchemaError, match="share voxels"):
        read_label_file(path, schema)


def test_values_outside_the_schema_are_refused(tmp_path, schema):
    volume = small_labels(schema)
    with pytest.raises(SchemaError, match="13"):
        write_seg_nrrd(volume.with_array(np.full(volume.array.shape, 13, np.uint8)), schema, tmp_path / "x.seg.nrrd")
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_a_plain_label_map_named_seg_nrrd_is_refused_not_read_as_empty(tmp_path, schema):
    volume = small_labels(schema)
    path = tmp_path / "plain.seg.nrrd"  # a label map saved under a segmentation's name: no Segment fields
    sitk.WriteImage(volume.to_sitk(), str(path))
    with pytest.raises(SchemaError, match="no segments"):
        read_label_file(path, schema)


def test_a_segment_in_a_layer_the_file_lacks_is_refused(tmp_path, schema):
    path = tmp_path / "small.seg.nrrd"
    write_seg_nrrd(small_labels(schema), schema, path)
    image = sitk.ReadImage(str(path))
    image.SetMetaData("Segment0_Layer", "3")  # the file has one layer
    sitk.WriteImage(image, str(path))
    with pytest.raises(SchemaError, match="in layer 3, but the file has 1 layer"):
        read_label_file(path, schema)


def test_label_maps_with_non_whole_or_non_finite_values_are_refused_not_truncated(tmp_path, schema):
    volume = small_labels(schema)
    whole = volume.array.astype(np.float32)  # a float file with whole values is a valid label map
    schema.check_label_values(whole)
    interpolated = whole.copy()
    interpolated[0, 0, 0] = 1.6  # truncated, it would become structure 1
    with pytest.raises(SchemaError, match=r"not whole numbers \(1\.6\)"):
        schema.check_label_values(interpolated)
    for bad in (np.nan, np.inf):
        broken = whole.copy()
        broken[0, 0, 0] = bad
        with pytest.raises(SchemaError, match="non-finite"):
            schema.check_label_values(broken)
    float_file = tmp_path / "interpolated.nii.gz"
    sitk.WriteImage(volume.with_array(interpolated).to_sitk(), str(float_file))
    with pytest.raises(SchemaError, match="not whole numbers"):
        read_label_file(float_file, schema)
    with pytest.raises(SchemaError, match="not whole numbers"):
        write_seg_nrrd(volume.with_array(interpolated), schema, tmp_path / "x.seg.nrrd")
    assert not (tmp_path / "x.seg.nrrd").exists()
