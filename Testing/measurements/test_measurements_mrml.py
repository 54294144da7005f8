"""The MRML adapter with the real Slicer core (slicer-core): model, colours, colour bar and table."""

from __future__ import annotations

import numpy as np
import pytest
from phantoms import KneePhantom

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("this 'slicer' package is not Slicer's core", allow_module_level=True)

from KneeAILib.measurements import LabelMap, measure_knee  # noqa: E402
from KneeAILib.measurements.regional_stats import COLUMNS  # noqa: E402
from KneeAILib.measurements_mrml import show_measurements  # noqa: E402


@pytest.fixture(scope="module")
def measured():
    return measure_knee(LabelMap.from_image(KneePhantom().image()))


def test_thickness_models_table_and_colour_bar_in_a_real_scene(measured):
    scene = slicer.vtkMRMLScene()
    models, table = show_measurements(scene, measured)
    assert len(models) == 4
    femur = models[0]
    plate = measured.plates["femoral_cartilage"]
    poly = femur.GetPolyData()
    assert poly.GetNumberOfPoints() == len(plate.thickness.vertices)
    assert poly.GetNumberOfCells() == len(plate.thickness.triangles)
    # RAS in MRML: x and y flip sign relative to the LPS mesh
    first = np.array(poly.GetPoint(0))
    assert np.allclose(first, plate.thickness.vertices[0] * [-1, -1, 1], atol=1e-3)
    arr = poly.GetPointData().GetArray("thickness_mm")
    values = np.array([arr.GetValue(i) for i in range(arr.GetNumberOfTuples())])
    assert np.allclose(values[plate.thickness.covered], plate.thickness.thickness[plate.thickness.covered], atol=1e-4)

    display = femur.GetDisplayNode()
    assert display.GetScalarVisibility() and display.GetActiveScalarName() == "thickness_mm"
    assert tuple(display.GetScalarRange()) == (0.0, 4.0)
    assert display.GetColorNode().GetNumberOfColors() == 256
    legends = [femur.GetNthDisplayNode(i) for i in range(femur.GetNumberOfDisplayNodes())
               if femur.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")]
    assert len(legends) == 1 and legends[0].GetPrimaryDisplayNode() is display

    t = table.GetTable()
    assert t.GetNumberOfRows() == len(measured.rows) and t.GetNumberOfColumns() == len(COLUMNS)
    col = COLUMNS.index("mean_thickness_mm")
    row = next(i for i, r in enumerate(measured.rows) if r["structure"] == "medial_tibial_cartilage"
               and r["region"] == "all")
    assert t.GetValue(row, 0).ToString() == "medial_tibial_cartilage"
    assert t.GetValue(row, col).ToDouble() == pytest.approx(measured.rows[row]["mean_thickness_mm"])
    assert table.GetColumnUnitLabel("mean_thickness_mm") == "mm"


def test_measuring_a_slicer_segmentation_gives_the_label_maps_numbers_and_every_file(measured, tmp_path):
    """What the module's Measure button runs: the segmentation is read back on the volume's grid in
    patient geometry (an oblique, anisotropic knee), measured, written and shown."""
    from KneeAILib import mrml_adapter
    from KneeAILib.measurements.outputs import measure_and_write
    from KneeAILib.measurements_mrml import label_map_from_segmentation
    from KneeAILib.schema import KneeSchema
    from KneeAILib.volume import PixelVolume

    scene, schema = slicer.vtkMRMLScene(), KneeSchema.load()
    original = LabelMap.from_image(KneePhantom().image())
    pixels = PixelVolume.from_sitk(original.to_image())
    volume = mrml_adapter.volume_node_from_pixels(scene, pixels, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, pixels, schema, volume)

    labels = label_map_from_segmentation(segmentation, volume, schema)
    assert np.array_equal(labels.array, original.array)
    for a, b in ((labels.spacing, original.spacing), (labels.origin, original.origin),
                 (labels.direction, original.direction)):
        assert np.allclose(a, b, atol=1e-6)

    m, comparison, written = measure_and_write(labels, tmp_path / "report", meshes=False)
    assert comparison is None
    assert m.frame.side == measured.frame.side
    for ours, theirs in zip(m.rows, measured.rows):
        assert ours["structure"] == theirs["structure"] and ours["region"] == theirs["region"]
        assert ours["mean_thickness_mm"] == pytest.approx(theirs["mean_thickness_mm"], nan_ok=True)
    assert {"html", "json", "csv"} <= set(written) and all(p.is_file() for p in written.values())
    models, _ = show_measurements(scene, m)
    assert [model.GetName() for model in models] == [f"{name} thickness" for name in m.plates]


def test_thickness_models_follow_the_measured_volumes_transform(measured):
    """The meshes are in the volume's local frame, like its segmentation (which observes the volume's
    transform): under a transform the models must move with them, not stay where the knee was."""
    from KneeAILib import mrml_adapter
    from KneeAILib.volume import PixelVolume
    from kneeai_testing import linear_transform_node

    scene = slicer.vtkMRMLScene()
    pixels = PixelVolume(np.zeros((2, 2, 2), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume = mrml_adapter.volume_node_from_pixels(scene, pixels, "knee")
    shift = np.eye(4)
    shift[:3, 3] = (40.0, 0.0, 0.0)
    transform = linear_transform_node(scene, shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    models, _ = show_measurements(scene, measured, volume_node=volume)
    local = np.array(models[0].GetPolyData().GetBounds())
    world = np.zeros(6)
    models[0].GetRASBounds(world)  # where the model shows: after its transforms
    assert all(model.GetTransformNodeID() == transform.GetID() for model in models)
    assert np.allclose(world, local + [40, 40, 0, 0, 0, 0], atol=1e-3)


def test_a_segmentation_with_a_segment_outside_the_schema_is_refused_before_measuring():
    from KneeAILib import mrml_adapter
    from KneeAILib.measurements_mrml import label_map_from_segmentation
    from KneeAILib.schema import KneeSchema
    from KneeAILib.volume import PixelVolume

    scene, schema = slicer.vtkMRMLScene(), KneeSchema.load()
    pixels = PixelVolume.from_sitk(LabelMap.from_image(KneePhantom(spacing=(1.5, 1.5, 1.5)).image()).to_image())
    volume = mrml_adapter.volume_node_from_pixels(scene, pixels, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, pixels, schema, volume)
    mask = np.zeros(pixels.array.shape, bool)
    mask[:3, :3, :3] = True
    extra = segmentation.GetSegmentation().AddEmptySegment("osteophyte", "Osteophyte")
    mrml_adapter.set_segment_mask(segmentation, extra, mask, volume)
    with pytest.raises(mrml_adapter.UnknownSegmentsError, match="Osteophyte"):
        label_map_from_segmentation(segmentation, volume, schema)


def test_measuring_again_replaces_the_earlier_models_and_table(measured):
    scene = slicer.vtkMRMLScene()
    show_measurements(scene, measured)
    counts = {cls: scene.GetNumberOfNodesByClass(cls) for cls in
              ("vtkMRMLModelNode", "vtkMRMLModelDisplayNode", "vtkMRMLColorLegendDisplayNode", "vtkMRMLTableNode")}
    assert counts == {"vtkMRMLModelNode": 4, "vtkMRMLModelDisplayNode": 4, "vtkMRMLColorLegendDisplayNode": 4,
                      "vtkMRMLTableNode": 1}
    models, table = show_measurements(scene, measured)
    assert {cls: scene.GetNumberOfNodesByClass(cls) for cls in counts} == counts
    assert all(scene.GetFirstNodeByName(model.GetName()) is model for model in models)
    assert scene.GetFirstNodeByName(table.GetName()) is table


def test_a_second_visit_segmentation_on_its_own_image_gives_the_change_in_the_scene(tmp_path):
    """The module's "Second visit": a segmentation made on its own (moved) image is read on that image's
    grid, both visits are measured and aligned, and the models and a change table show the change."""
    from KneeAILib import mrml_adapter
    from KneeAILib.measurements.outputs import measure_and_write
    from KneeAILib.measurements_mrml import label_map_from_segmentation, label_map_of_segmentation
    from KneeAILib.schema import KneeSchema
    from KneeAILib.volume import PixelVolume

    scene, schema = slicer.vtkMRMLScene(), KneeSchema.load()
    nodes = []
    moved = KneePhantom(medial_thickness=1.5, rotation_deg=(5, -4, 8), shift_mm=(2.0, -3.0, 1.5))
    for phantom in (KneePhantom(), moved):
        pixels = PixelVolume.from_sitk(phantom.image())
        volume = mrml_adapter.volume_node_from_pixels(scene, pixels, "visit")
        nodes.append((mrml_adapter.segmentation_from_labels(scene, pixels, schema, volume), volume))
    (first, first_volume), (second, _) = nodes
    m, comparison, written = measure_and_write(label_map_from_segmentation(first, first_volume, schema),
                                               tmp_path, second_visit=label_map_of_segmentation(second, schema),
                                               meshes=False)
    assert comparison.row("medial_tibial_cartilage")["change_mm"] == pytest.approx(-0.5, abs=0.12)
    assert abs(comparison.row("lateral_tibial_cartilage")["change_mm"]) < 0.05
    assert "change_csv" in written and written["change_csv"].is_file()

    # Measured again into the same folder without the second visit: the earlier change files go (the
    # folder never mixes two measurements), a file of the user's stays.
    from KneeAILib.measurements.outputs import MANIFEST, write_all

    (tmp_path / "notes.txt").write_text("mine")
    again = write_all(tmp_path, label_map_from_segmentation(first, first_volume, schema), m, meshes=False)
    assert "change_csv" not in again and not written["change_csv"].exists()
    assert not list(tmp_path.glob("*_change_map.png")) and (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({p.name for p in again.values()} | {"notes.txt",
                                                                                                   MANIFEST})

    models, _ = show_measurements(scene, m, comparison)
    medial = next(model for model in models if model.GetName() == "medial_tibial_cartilage thickness")
    arr = medial.GetPolyData().GetPointData().GetArray("thickness_change_mm")
    values = np.array([arr.GetValue(i) for i in range(arr.GetNumberOfTuples())])
    in_plate = m.plates["medial_tibial_cartilage"].in_plate
    assert np.nanmedian(values[in_plate]) == pytest.approx(-0.5, abs=0.12)
    change_table = scene.GetFirstNodeByName("KneeAI thickness change")
    assert change_table.GetTable().GetNumberOfRows() == len(comparison.rows)
    assert change_table.GetColumnUnitLabel("change_mm") == "mm"

    orphan = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no image")
    with pytest.raises(ValueError, match="no reference volume"):
        label_map_of_segmentation(orphan, schema)


def test_each_knee_is_measured_into_a_folder_of_its_own_with_a_plain_name(tmp_path):
    from KneeAILib.measurements.outputs import case_folder

    assert case_folder(tmp_path, "knee_phantom_000 segmentation") == tmp_path / "knee_phantom_000 segmentation"
    assert case_folder(tmp_path, "../../etc/passwd").parent == tmp_path
    assert case_folder(tmp_path, "..") == tmp_path / "knee" and case_folder(tmp_path, "a/b:c") == tmp_path / "a_b_c"


def test_the_modules_measure_puts_the_models_under_the_measured_volumes_transform(monkeypatch, tmp_path):
    """KneeAILogic.measure (KneeAI.py's own code) on a phantom knee whose volume sits under a transform,
    as a registered second visit would."""
    import types

    from kneeai_testing import kneeai_logic_class, linear_transform_node
    from KneeAILib import mrml_adapter
    from KneeAILib.schema import KneeSchema
    from KneeAILib.volume import PixelVolume

    scene = slicer.vtkMRMLScene()
    mrml_adapter.ensure_segmentation_converters()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    pixels = PixelVolume.from_sitk(LabelMap.from_image(KneePhantom(spacing=(1.5, 1.5, 1.5)).image()).to_image())
    volume = mrml_adapter.volume_node_from_pixels(scene, pixels, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, pixels, KneeSchema.load(), volume)
    shift = np.eye(4)
    shift[:3, 3] = (0.0, 25.0, 0.0)
    transform = linear_transform_node(scene, shift)
    for node in (volume, segmentation):
        node.SetAndObserveTransformNodeID(transform.GetID())
    messages = []
    logic = kneeai_logic_class()(None, changed=lambda message=None, error=False: messages.append((message, error)))
    parameters = types.SimpleNamespace(inputVolume=volume, segmentation=segmentation, secondVisit=None)
    logic.measure(parameters, str(tmp_path))
    logic.runner.wait(timeout=300)
    assert "knee measured" in messages[-1][0], messages
    models = [scene.GetNthNodeByClass(i, "vtkMRMLModelNode") for i in range(scene.GetNumberOfNodesByClass(
        "vtkMRMLModelNode"))]
    assert len(models) == 4 and all(model.GetTransformNodeID() == transform.GetID() for model in models)
