"""The server's parts on their own: DICOM echoes, working grids, the union-aware loss, the fixed split,
model versions, anatomical clean-up, and the inference pipeline's geometry on an oblique volume."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from kneeai_testing import MESE_DICOM, ROOT, TINY_MODEL_CONF, require
from KneeAILib.schema import KneeSchema
from lib.configs.knee_segmentation import fine_tune_overrides, model_config_from_conf
from lib.dicom_import import import_dicom_folders
from lib.losses import UnionAwareDiceCELoss
from lib.model_store import ModelStore
from lib.networks import KneeNetworks
from lib.segmenter import KneeSegmenter
from lib.trainers.training_data import fixed_split, random_crop
from lib.transforms.image_io import InputError, read_dicom_echoes, read_volume
from lib.transforms.postprocess import anatomical_cleanup
from lib.transforms.working_grid import Grid, grid_for_box, resample, world_box

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")


# -- DICOM -------------------------------------------------------------------------------------------
def test_multi_echo_dicom_series_is_split_by_echo_time():
    echoes = read_dicom_echoes(require(MESE_DICOM))
    times = [te for te, _ in echoes]
    assert len(echoes) == 8 and times == sorted(times)
    assert times[0] == pytest.approx(6.3, abs=0.1) and times[-1] == pytest.approx(50.5, abs=0.1)
    for _, volume in echoes:
        assert volume.GetSize() == (256, 256, 24)  # 24 slices per echo, not 192 stacked
        assert volume.GetSpacing()[2] == pytest.approx(4.0, abs=0.01)  # 3 mm slices every 4 mm
    # Later echoes of a T2 series are darker: the split really separates echoes.
    means = [float(sitk.GetArrayViewFromImage(v).mean()) for _, v in echoes]
    assert means[0] > means[-1]


def test_dicom_folder_in_studies_becomes_one_volume_per_echo_without_header(tmp_path):
    import shutil

    shutil.copytree(require(MESE_DICOM), tmp_path / "mese")
    written = import_dicom_folders(tmp_path)
    assert sorted(p.name for p in written) == [f"mese_echo{k}.nii.gz" for k in range(1, 9)]
    volume = sitk.ReadImage(str(written[0]))
    assert volume.GetSize() == (256, 256, 24)
    assert not [k for k in volume.GetMetaDataKeys() if k.startswith("00")]  # no DICOM tags carried
    assert import_dicom_folders(tmp_path) == []  # idempotent


def test_requesting_a_missing_echo_is_a_clear_error():
    with pytest.raises(InputError, match="echo 9 requested"):
        read_volume(require(MESE_DICOM), echo=9)


# -- geometry -------------------------------------------------------------------------------------------
def oblique_volume() -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(size=(20, 40, 36)).astype(np.float32))
    image.SetSpacing((0.7, 0.4, 2.0))
    image.SetOrigin((12.0, -30.5, 7.25))
    rotation = sitk.VersorTransform((0.3, 0.2, 0.9), 0.5)
    image.SetDirection(rotation.GetMatrix())
    return image


def test_working_grid_is_world_aligned_and_covers_the_image():
    image = oblique_volume()
    grid = grid_for_box(world_box(image), (1.0, 1.0, 1.0), multiple_of=8)
    assert grid.direction == Grid.of(sitk.Image(1, 1, 1, sitk.sitkUInt8)).direction
    assert all(s % 8 == 0 for s in grid.size)
    resampled = resample(image, grid)
    box, grid_box = world_box(image), world_box(resampled)
    assert np.all(np.asarray(grid_box.lower) <= np.asarray(box.lower) + 1e-6)
    assert np.all(np.asarray(grid_box.upper) >= np.asarray(box.upper) - 1e-6)


def test_untrained_pipeline_returns_the_oblique_input_geometry():
    image = oblique_volume()
    config = model_config_from_conf(TINY_MODEL_CONF)
    segmenter = KneeSegmenter(KneeNetworks.create(config), SCHEMA, torch.device("cpu"))
    labels = segmenter.segment(image).labels
    assert labels.GetSize() == image.GetSize()
    assert labels.GetSpacing() == image.GetSpacing()
    assert labels.GetOrigin() == image.GetOrigin()
    assert labels.GetDirection() == image.GetDirection()
    assert labels.GetPixelID() == sitk.sitkUInt8


def constant_network(network: torch.nn.Module, value: int) -> torch.nn.Module:
    """``network`` made to answer class ``value`` everywhere: its last convolution's weights zeroed
    and its bias on that class (real layers, a known answer)."""
    last = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[value] = 10.0
    return network


def test_fine_crop_joins_the_coarse_labels_without_a_seam():
    # Both passes answer "tibia" everywhere and the fine box (max_roi_mm) is smaller than the oblique
    # image: the whole knee must come back tibia. The index block around the box holds voxels the fine
    # grid does not cover (its rim, the oblique corners); labelled background, they cut the bone.
    image = oblique_volume()
    config = model_config_from_conf({**TINY_MODEL_CONF, "max_roi_mm": "20"})
    networks = KneeNetworks.create(config)
    tibia = SCHEMA.value_of("tibia")
    constant_network(networks.coarse, tibia)
    constant_network(networks.fine, tibia)
    result = KneeSegmenter(networks, SCHEMA, torch.device("cpu")).segment(image)
    assert max(result.joint_box.extent) <= 20.0 + 1e-6
    assert (sitk.GetArrayViewFromImage(result.labels) == tibia).all()


def test_a_new_version_must_beat_the_promoted_model_measured_again_on_the_same_cases(tmp_path):
    """The promoted model's stored score is stale (0.0, as if measured on other cases or by an older
    pipeline). A run that cannot change the weights (learning rate 0, fine-tuning the promoted model)
    validates exactly as the promoted model does, so it must not be promoted; comparing with the
    stored 0.0 would promote it."""
    from monailabel.datastore.local import LocalDatastore

    from lib.synthesis.sample_dataset import generate_sample_dataset
    from lib.trainers.knee_segmentation import KneeSegmentationTrainer

    generate_sample_dataset(tmp_path / "studies", n_cases=2, n_labelled=2, seed=0)
    config = model_config_from_conf(TINY_MODEL_CONF)
    networks = KneeNetworks.create(config)
    constant_network(networks.coarse, SCHEMA.value_of("femur"))  # a known, non-zero validation Dice
    constant_network(networks.fine, SCHEMA.value_of("femur"))
    store = ModelStore(tmp_path / "model")
    incumbent = store.new_version()
    store.save(incumbent, networks.state(), {"mean_dice": 0.0})
    store.promote(incumbent, 0.0)
    trainer = KneeSegmentationTrainer(store, SCHEMA, config, "test")
    summary = trainer({"max_epochs": 1, "iterations_per_epoch": 1, "learning_rate": 0.0, "init": "promoted",
                       "device": "cpu"},
                      LocalDatastore(str(tmp_path / "studies"), extensions=["*.nii.gz"], auto_reload=False))
    assert summary["mean_dice"] == summary["promotion_bar"] > 0.0
    assert not summary["promoted"] and store.promoted()["version"] == incumbent
    assert store.metrics(summary["version"])["promotion_bar"] == summary["promotion_bar"]


def test_a_fine_tune_takes_the_servers_box_settings_and_keeps_the_models_spacings(tmp_path):
    """A server started with a taller joint box must train a fine-tuned version with it (the box is not
    in the weights), while the promoted model's spacings and filters, which its weights were learned
    with, stay; a box setting the server was not given keeps the model's own value."""
    from monailabel.datastore.local import LocalDatastore

    from lib.synthesis.sample_dataset import generate_sample_dataset
    from lib.trainers.knee_segmentation import KneeSegmentationTrainer

    generate_sample_dataset(tmp_path / "studies", n_cases=2, n_labelled=2, seed=0)
    promoted_config = model_config_from_conf({**TINY_MODEL_CONF, "fine_patch": "40,40,40"})
    store = ModelStore(tmp_path / "model")
    incumbent = store.new_version()
    store.save(incumbent, KneeNetworks.create(promoted_config).state(), {"mean_dice": 0.0})
    store.promote(incumbent, 0.0)
    server_conf = {**TINY_MODEL_CONF, "roi_margin_mm": "25", "max_roi_mm": "140", "fine_spacing": "3,3,3"}
    del server_conf["fine_patch"]  # not given: the model's 40^3 stays, not the default 96^3
    overrides = fine_tune_overrides(server_conf)
    assert overrides["roi_margin_mm"] == 25.0 and "fine_spacing" not in overrides and "fine_patch" not in overrides
    trainer = KneeSegmentationTrainer(store, SCHEMA, model_config_from_conf(server_conf), "test",
                                      fine_tune_overrides=overrides)
    summary = trainer({"max_epochs": 1, "iterations_per_epoch": 1, "init": "promoted", "device": "cpu"},
                      LocalDatastore(str(tmp_path / "studies"), extensions=["*.nii.gz"], auto_reload=False))
    saved = KneeNetworks.from_state(torch.load(store.model_path(summary["version"]), weights_only=True)).config
    assert (saved.roi_margin_mm, saved.max_roi_mm) == (25.0, 140.0)
    assert saved.fine_spacing == promoted_config.fine_spacing == (2.0, 2.0, 2.0)
    assert saved.fine_patch == (40, 40, 40)


# -- loss ----------------------------------------------------------------------------------------------
def test_unsplit_tibial_cartilage_is_scored_over_the_union():
    loss = UnionAwareDiceCELoss(11, SCHEMA.group_members())
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, :4] = 20  # tibial cartilage, plate unknown
    target[0, 4:, :2] = 1
    good = torch.full((1, 11, 8, 8, 8), -5.0)
    good[:, 0] = 5.0
    good[0, :, :4] = -5.0
    good[0, 6, :4, :, :4] = 5.0  # half called medial ...
    good[0, 7, :4, :, 4:] = 5.0  # ... half lateral: both allowed
    good[0, 0, 4:, :2] = -5.0
    good[0, 1, 4:, :2] = 5.0
    wrong = good.clone()
    wrong[0, 6:8, :4] = -5.0
    wrong[0, 5, :4] = 5.0  # called femoral cartilage: wrong
    assert loss(good, target).item() < 0.01
    assert loss(wrong, target).item() > 1.0


# -- split and versions --------------------------------------------------------------------------------
def test_validation_split_is_fixed_as_data_grows(tmp_path):
    items = [{"image": f"/d/case_{i:02d}.nii.gz", "label": f"/d/labels/case_{i:02d}.nii.gz"} for i in range(6)]
    split_file = tmp_path / "split.json"
    train, val = fixed_split(items[:3], split_file)
    assert val and train
    first = {i["image"]: "val" for i in val} | {i["image"]: "train" for i in train}
    train2, val2 = fixed_split(items, split_file)
    second = {i["image"]: "val" for i in val2} | {i["image"]: "train" for i in train2}
    assert all(second[k] == side for k, side in first.items())
    assert fixed_split(items, split_file) == (train2, val2)


def test_crops_centred_by_class_reach_a_small_structure_as_often_as_a_large_one():
    """The option the GPU plan tries beside the default: a 5-voxel patella-like block against a femur-like
    block of 48 000 voxels. Any labelled voxel alike almost never centres a crop on the small one."""
    labels = np.zeros((64, 64, 64), np.uint8)
    labels[2:32, 2:42, 2:42] = 1
    labels[55:60, 55:60, 55:60] = 3
    image = labels.astype(np.float32)

    def share_with_the_small_block(centres: str) -> float:
        rng = np.random.default_rng(0)
        crops = [random_crop(image, labels, (8, 8, 8), rng, foreground_probability=1.0, centres=centres)
                 for _ in range(400)]
        assert all(x.shape == (8, 8, 8) and np.array_equal(x, y) for x, y in crops)  # image and label stay paired
        return float(np.mean([(y == 3).any() for _, y in crops]))

    assert share_with_the_small_block("voxels") < 0.05
    assert 0.4 < share_with_the_small_block("classes") < 0.6
    with pytest.raises(ValueError, match="crop centres must be one of"):
        random_crop(image, labels, (8, 8, 8), np.random.default_rng(0), centres="class")


def test_promotion_keeps_the_promoted_version(tmp_path):
    store = ModelStore(tmp_path)
    state = KneeNetworks.create(model_config_from_conf(TINY_MODEL_CONF)).state()
    v1, v2, v3 = store.new_version(), store.new_version(), store.new_version()
    assert (v1, v2, v3) == ("v0001", "v0002", "v0003")
    store.save(v1, state, {"mean_dice": 0.5})
    store.promote(v1, 0.5)
    store.save(v2, state, {"mean_dice": 0.4})
    assert store.promoted()["version"] == v1
    # v3 was reserved by a run that was stopped before it saved anything: it is no version at all.
    assert store.versions() == [v1, v2]
    version, loaded = store.load_promoted()
    assert version == v1 and KneeNetworks.from_state(loaded).config == KneeNetworks.from_state(state).config


# -- post-processing -----------------------------------------------------------------------------------
def test_cleanup_keeps_largest_bone_and_only_attached_cartilage():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:15, 5:25, 5:25] = 1  # femur
    labels[25:28, 25:28, 25:28] = 1  # a stray femur island
    labels[15:17, 5:25, 5:25] = 5  # femoral cartilage on the femur
    labels[22:24, 2:4, 2:4] = 5  # cartilage floating away from any bone
    cleaned = anatomical_cleanup(labels.copy(), SCHEMA)
    assert (cleaned[25:28, 25:28, 25:28] == 0).all()
    assert (cleaned[15:17, 5:25, 5:25] == 5).all()
    assert (cleaned[22:24, 2:4, 2:4] == 0).all()
    assert (cleaned[5:15, 5:25, 5:25] == 1).all()
