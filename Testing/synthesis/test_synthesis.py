"""MRI synthesis from label maps: determinism, geometry, per-tissue intensities, locality, background
texture, resolution, noise, deformation, and one real OAI-ZIB label map."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from KneeAILib.schema import SchemaError
from lib.synthesis.background import BACKGROUND_CODE, BackgroundLayout, build_class_map
from lib.synthesis.label_source import tissue_kind_by_value
from lib.synthesis.phantom import make_knee_phantom
from lib.synthesis.synthesize import draw_parameters, load_label_map, render, synthesize_image, synthesize_pair
from lib.synthesis.tissues import Tissue
from scipy import ndimage

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "labels"
# No noise, bias, blur, texture or contrast curve: the image is the per-class mean map.
CLEAN = dict(
    noise_sigma=0.0, bias_strength=0.0, in_plane_blur_mm=0.0, slice_thickness_mm=0.3,
    texture_amplitude=0.0, marrow_texture_amplitude=0.0, gamma=1.0,
)


@pytest.fixture(scope="module")
def labels():
    return make_knee_phantom(0)


def array(image):
    return sitk.GetArrayFromImage(image)


def interior(mask, voxels=1):
    return ndimage.binary_erosion(mask, iterations=voxels)


def test_same_seed_gives_identical_image(labels):
    np.testing.assert_array_equal(array(synthesize_image(labels, 4)), array(synthesize_image(labels, 4)))
    a, b = array(synthesize_image(labels, 4)), array(synthesize_image(labels, 5))
    assert np.abs(a - b).mean() > 0.01


def test_different_seeds_change_the_contrast(labels):
    lab = array(labels)
    cartilage, femur, meniscus = interior(lab == 5), interior(lab == 1, 3), interior(lab == 9)
    ratios, rankings = [], set()
    for seed in range(8):
        image = array(synthesize_image(labels, seed))
        means = [image[cartilage].mean(), image[femur].mean(), image[meniscus].mean()]
        ratios.append(means[0] / means[1])
        rankings.add(tuple(np.argsort(means)))
    assert max(ratios) / min(ratios) > 2.0, ratios
    assert len(rankings) >= 2, rankings


def test_output_has_the_label_geometry_even_when_oblique():
    source = make_knee_phantom(2, spacing=(0.5, 0.7, 1.1), size=(96, 80, 64))
    angle = np.radians(10.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source.SetDirection(direction.ravel().tolist())
    source.SetOrigin((12.5, -40.0, 7.25))
    image = synthesize_image(source, 1, plane="coronal", slice_thickness_mm=3.0)
    assert image.GetPixelID() == sitk.sitkFloat32
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(image, getter)() == getattr(source, getter)()
    assert np.isfinite(array(image)).all()


@pytest.mark.parametrize("contrast", ["random", "dess", "t2"])
def test_each_structure_shows_its_own_drawn_intensity(labels, contrast):
    parameters = draw_parameters(3, contrast, **CLEAN)
    image, lab = array(render(labels, parameters)), array(labels)
    cortex_voxels = int(np.ceil(parameters.layout.cortex_mm / 0.8)) + 1
    for value in range(1, 11):
        kind = tissue_kind_by_value()[value]
        inside = interior(lab == value, cortex_voxels if kind == "bone" else 1)
        assert inside.sum() > 20, value
        assert image[inside].mean() == pytest.approx(parameters.structure_means[value], rel=1e-4, abs=1e-6)
    # Structure means are drawn independently: with "random" contrast no two are the same.
    if contrast == "random":
        means = [parameters.structure_means[v] for v in range(1, 11)]
        assert len(set(np.round(means, 6))) == 10


def test_relabelling_one_patch_changes_the_image_only_near_it(labels):
    lab = array(labels)
    edited = lab.copy()
    cartilage = np.argwhere(lab == 5)
    centre = cartilage[len(cartilage) // 2]
    patch = np.zeros(lab.shape, bool)
    patch[tuple(slice(c - 6, c + 7) for c in centre)] = True
    edited[patch & (lab == 5)] = 0
    edited_image = sitk.GetImageFromArray(edited)
    edited_image.CopyInformation(labels)

    options = dict(plane="axial", slice_thickness_mm=3.0, in_plane_blur_mm=0.5)
    before, after = array(synthesize_image(labels, 9, **options)), array(synthesize_image(edited_image, 9, **options))
    changed = np.abs(after - before) > 1e-6
    assert changed.sum() > 50
    distance_mm = ndimage.distance_transform_edt(~(patch & (lab == 5)), sampling=(0.8, 0.8, 0.8))
    # Reach: fluid layer (<= 2.5 mm) + thick-slice profile and interpolation (~2 slices) + blur.
    assert distance_mm[changed].max() < 12.0


def test_background_is_made_of_several_tissues(labels):
    lab = array(labels)
    kinds = tissue_kind_by_value()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        classes = build_class_map(lab, (0.8, 0.8, 0.8), kinds, BackgroundLayout.draw(rng), rng)
        background = classes[lab == 0] - BACKGROUND_CODE
        present = set(np.unique(background))
        assert {Tissue.FAT, Tissue.MUSCLE, Tissue.FLUID} <= present, present
        assert (classes[lab > 0] < BACKGROUND_CODE).mean() > 0.8  # labelled voxels keep their label...
        assert Tissue.CORTEX + BACKGROUND_CODE in set(np.unique(classes[lab == 1]))  # ...bones get a rim


def test_background_intensity_is_not_flat(labels):
    lab = array(labels)
    near_joint = (lab == 0) & (ndimage.distance_transform_edt(lab == 0, sampling=(0.8,) * 3) < 15.0)
    for seed in range(4):
        parameters = draw_parameters(seed, "dess", noise_sigma=0.01)
        image = array(render(labels, parameters))
        # Noise alone would give std ~ 0.01; tissue variety gives far more.
        assert image[near_joint].std() > 5 * parameters.noise_sigma, seed


def test_thick_slices_smooth_only_the_acquisition_axis(labels):
    thin = array(synthesize_image(labels, 6, **CLEAN))
    for plane, axis in (("sagittal", 2), ("coronal", 1), ("axial", 0)):  # phantom arrays are [S, A, R]
        thick = array(synthesize_image(labels, 6, **{**CLEAN, "plane": plane, "slice_thickness_mm": 4.0}))
        edges = lambda image, a: np.abs(np.diff(image, axis=a)).mean()  # noqa: E731
        assert edges(thick, axis) < 0.6 * edges(thin, axis), plane
        other = (axis + 1) % 3
        assert edges(thick, other) > 0.7 * edges(thin, other), plane


def test_noise_is_rician():
    empty = sitk.Image(48, 48, 48, sitk.sitkUInt8)
    parameters = draw_parameters(0, "dess", **{**CLEAN, "noise_sigma": 0.05})
    tissue_means = {**parameters.tissue_means, Tissue.AIR: 0.0}
    image = array(render(empty, draw_parameters(0, "dess", **{**CLEAN, "noise_sigma": 0.05, "tissue_means": tissue_means})))
    # Magnitude of pure complex Gaussian noise: Rayleigh, mean sigma * sqrt(pi / 2), never negative.
    assert image.min() >= 0
    assert image.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.02)


def test_pair_deforms_labels_and_image_together(labels):
    image, moved = synthesize_pair(labels, 12)
    assert moved.GetSize() == labels.GetSize() and moved.GetDirection() == labels.GetDirection()
    assert (array(moved) != array(labels)).mean() > 0.01
    assert set(np.unique(array(moved))) == set(np.unique(array(labels)))
    np.testing.assert_array_equal(array(image), array(synthesize_image(moved, 12)))
    again_image, again_moved = synthesize_pair(labels, 12)
    np.testing.assert_array_equal(array(again_moved), array(moved))
    np.testing.assert_array_equal(array(again_image), array(image))


def test_unsplit_tibial_cartilage_is_imaged_as_cartilage(labels):
    lab = array(labels)
    grouped = np.where(np.isin(lab, (6, 7)), 20, lab).astype(np.uint8)
    grouped_image = sitk.GetImageFromArray(grouped)
    grouped_image.CopyInformation(labels)
    parameters = draw_parameters(1, "dess", **CLEAN)
    image = array(render(grouped_image, parameters))
    tibial = image[interior(grouped == 20)].mean()
    low, high = 0.45 * 0.9, 0.7 * 1.1  # DESS cartilage range with per-structure spread
    assert low <= tibial <= high
    assert tibial > 2 * image[interior(grouped == 2, 3)].mean()  # far brighter than tibial marrow


def test_unknown_label_values_are_refused(labels):
    bad = array(labels)
    bad[0, 0, 0] = 42
    bad_image = sitk.GetImageFromArray(bad)
    bad_image.CopyInformation(labels)
    with pytest.raises(SchemaError, match="42"):
        synthesize_image(bad_image, 0)


@pytest.mark.skipif(not (DATA / "oai_zib").is_dir(), reason="real OAI-ZIB label maps not in ../shared/data")
def test_synthesis_from_a_real_oai_zib_label_map():
    path = sorted((DATA / "oai_zib").glob("oai_zib_*.nii.gz"))[0]
    full = load_label_map(path, "oai_zib")
    assert set(np.unique(array(full))) <= {0, 1, 2, 3, 5, 8, 20}
    labels = full[::2, ::3, ::3]  # ~1.4 x 1.1 x 1.1 mm keeps the test fast
    image = synthesize_image(labels, 21, "dess", **{**CLEAN, "noise_sigma": 0.02})
    assert image.GetSize() == labels.GetSize() and image.GetOrigin() == labels.GetOrigin()
    assert image.GetDirection() == labels.GetDirection()
    pixels, lab = array(image), array(labels)
    cartilage = pixels[interior(np.isin(lab, (5, 20)))].mean()  # femoral + unsplit tibial cartilage
    marrow = pixels[interior(lab == 1, 3)].mean()
    assert cartilage > 2 * marrow  # DESS: cartilage bright, marrow suppressed


@pytest.mark.skipif(not (DATA / "oai_dess_10class.nrrd").is_file(), reason="real OAI DESS label map missing")
def test_load_label_map_translates_the_10_class_convention():
    source = sitk.ReadImage(str(DATA / "oai_dess_10class.nrrd"))
    labels = load_label_map(DATA / "oai_dess_10class.nrrd", "oai_dess_10class")
    assert labels.GetPixelID() == sitk.sitkUInt8 and labels.GetDirection() == source.GetDirection()
    src, out = array(source), array(labels)
    assert set(np.unique(out)) == set(range(11))
    for source_value, schema_value in ((1, 5), (5, 1), (8, 4), (9, 10), (10, 9)):
        np.testing.assert_array_equal(src == source_value, out == schema_value)
