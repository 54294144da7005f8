"""The K-fold split is by knee, deterministic, disjoint, balanced, and the saved file is the authority."""

from __future__ import annotations

import json
import random

import pytest
from kneeai_testing import SHARED_DATA

from lib.evaluation.cross_validation import KneeSplit
from lib.evaluation.label_maps import find_label_maps, knee_id
from lib.evaluation.training_datastore import image_id, knee_of

KNEES = [f"knee_{i:03d}" for i in range(23)]


def test_folds_partition_the_knees_and_train_never_meets_test():
    split = KneeSplit.create(KNEES, folds=5, seed=0)
    tested = []
    for fold in range(5):
        train, test = set(split.train_knees(fold)), set(split.test_knees(fold))
        assert not train & test
        assert train | test == set(KNEES)
        tested += split.test_knees(fold)
    assert sorted(tested) == sorted(KNEES)  # every knee is tested exactly once
    sizes = [len(split.test_knees(f)) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1


def test_split_is_deterministic_whatever_the_listing_order():
    shuffled = KNEES[:]
    random.Random(7).shuffle(shuffled)
    assert KneeSplit.create(shuffled, 5, seed=0) == KneeSplit.create(KNEES, 5, seed=0)
    # The seed matters: the assignment is not simply alphabetical.
    assert KneeSplit.create(KNEES, 5, seed=0).fold_of != KneeSplit.create(KNEES, 5, seed=1).fold_of


def test_every_variant_of_a_knee_belongs_to_that_knee():
    # Datastore images carry their knee in their id: the split of images follows the split of knees.
    for knee in ("oai_zib_9001104", "my knee__2", "a__v1"):
        for variant in range(12):
            assert knee_of(image_id(knee_id(knee + ".nii.gz"), variant)) == knee_id(knee + ".nii.gz")


def test_saved_split_is_reloaded_and_refuses_unknown_knees(tmp_path):
    path = tmp_path / "split.json"
    created = KneeSplit.load_or_create(path, KNEES, folds=5)
    assert json.loads(path.read_text())["test_knees_by_fold"]["0"] == created.test_knees(0)
    # A different seed does not silently reshuffle a saved split.
    assert KneeSplit.load_or_create(path, KNEES, folds=5, seed=99) == created
    with pytest.raises(ValueError, match="not in the saved split"):
        KneeSplit.load_or_create(path, KNEES + ["new_knee"], folds=5)
    with pytest.raises(ValueError, match="folds"):
        KneeSplit.load_or_create(path, KNEES, folds=4)
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        created.test_knees(5)


def test_too_few_knees_for_the_folds_is_refused():
    with pytest.raises(ValueError, match="cannot fill"):
        KneeSplit.create(["a", "b"], folds=3)


def test_the_twenty_oai_zib_knees_make_five_folds_of_four():
    folder = SHARED_DATA / "labels" / "oai_zib"
    if not folder.is_dir():
        pytest.skip(f"shared test data not found: {folder}")
    knees = list(find_label_maps(folder))
    assert len(knees) == 20 and all(k.startswith("oai_zib_") for k in knees)
    split = KneeSplit.create(knees, folds=5)
    assert [len(split.test_knees(f)) for f in range(5)] == [4, 4, 4, 4, 4]
