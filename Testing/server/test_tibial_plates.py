"""The server names the two tibial cartilage plates of a prediction by geometry and anatomy
(lib/transforms/tibial_plates.py), on the real expert map that splits them (OAI DESS, 10 classes)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from kneeai_testing import ROOT, SHARED_DATA, require

from KneeAILib.schema import KneeSchema
from lib.evaluation.label_maps import read_knee_labels
from lib.transforms.tibial_plates import name_tibial_plates

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")
MEDIAL = SCHEMA.value_of("medial_tibial_cartilage")
LATERAL = SCHEMA.value_of("lateral_tibial_cartilage")


@pytest.fixture(scope="module")
def expert():
    """The expert's map (a right knee: its menisci say so) and its labels as an array."""
    image = read_knee_labels(require(SHARED_DATA / "labels" / "oai_dess_10class.nrrd"), "oai_dess_10class")
    return image, sitk.GetArrayFromImage(image)


def without(labels: np.ndarray, *keys: str) -> np.ndarray:
    out = labels.copy()
    out[np.isin(out, [SCHEMA.value_of(k) for k in keys])] = 0
    return out


def test_plates_called_one_name_are_split_and_named_by_anatomy(expert):
    """The network called all tibial cartilage lateral and found no menisci or fibula: the plates come
    back as the expert drew them, named from the plates' and trochlea's shape."""
    image, truth = expert
    predicted = without(truth, "medial_meniscus", "lateral_meniscus", "fibula")
    predicted[predicted == MEDIAL] = LATERAL
    how = name_tibial_plates(predicted, image, SCHEMA)
    assert "named by anatomy" in how and "meniscus" not in how
    assert np.array_equal(predicted == MEDIAL, truth == MEDIAL)
    assert np.array_equal(predicted == LATERAL, truth == LATERAL)


def test_each_plate_gets_one_name_from_the_network_when_it_names_them_apart(expert):
    """A network that names the plates opposite to the anatomy (here: swapped, with a third of each
    plate's voxels dithering to the other name) keeps its naming, one name per plate. The menisci
    are left out so that the anatomy's answer comes from shape alone."""
    image, truth = expert
    predicted = without(truth, "medial_meniscus", "lateral_meniscus", "fibula")
    medial_plate, lateral_plate = truth == MEDIAL, truth == LATERAL
    predicted[medial_plate], predicted[lateral_plate] = LATERAL, MEDIAL
    dither = np.random.default_rng(0).random(truth.shape) < 0.3
    predicted[medial_plate & dither] = MEDIAL
    predicted[lateral_plate & dither] = LATERAL
    how = name_tibial_plates(predicted, image, SCHEMA)
    assert "named by the network" in how
    assert np.array_equal(predicted == LATERAL, medial_plate)
    assert np.array_equal(predicted == MEDIAL, lateral_plate)


def test_a_single_plate_is_left_as_predicted(expert):
    image, truth = expert
    predicted = without(truth, "medial_tibial_cartilage")
    before = predicted.copy()
    how = name_tibial_plates(predicted, image, SCHEMA)
    assert how.startswith("left as predicted") and np.array_equal(predicted, before)
