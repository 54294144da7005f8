"""The click network's configuration travels with its weights: how its proposals are written back is
what its validation measured, and a fine-tune keeps the weights' architecture."""

from __future__ import annotations

import pytest
import torch

from lib.interactive.network import LEGACY_WRITE_BACK, ClickNetConfig, build_click_network, click_state
from lib.interactive.refine import network_refiner
from lib.model_store import ModelStore
from lib.trainers.knee_refinement import KneeRefinementTrainer


def test_a_network_saved_before_the_write_back_settings_keeps_the_write_back_it_was_validated_with():
    saved = ClickNetConfig(init_filters=8).to_dict()
    for key in ("keep_connected", "follow_click_sign"):
        del saved[key]
    saved["radius_mm"] = 12.0
    config = ClickNetConfig.from_dict(saved)
    assert (config.radius_mm, config.keep_connected, config.follow_click_sign) == (
        LEGACY_WRITE_BACK["radius_mm"], LEGACY_WRITE_BACK["keep_connected"], LEGACY_WRITE_BACK["follow_click_sign"])
    # A configuration that names them keeps its own, and the refiner uses them.
    own = ClickNetConfig(init_filters=8, radius_mm=20.0, keep_connected=False, follow_click_sign=True)
    loaded = ClickNetConfig.from_dict(own.to_dict())
    assert loaded == own
    refiner = network_refiner("v", build_click_network(loaded), loaded, torch.device("cpu"))
    assert (refiner.radius_mm, refiner.keep_connected, refiner.follow_click_sign) == (20.0, False, True)


def test_fine_tuning_keeps_the_weights_architecture_and_takes_the_servers_write_back(schema, tmp_path):
    store = ModelStore(tmp_path / "refinement")
    old = ClickNetConfig(init_filters=8, click_sigma_mm=2.0, radius_mm=12.0, follow_click_sign=False)
    network = build_click_network(old)
    version = store.new_version()
    store.save(version, click_state(old, network), {"mean_dice": 0.5})
    store.promote(version, 0.5)

    server = ClickNetConfig(init_filters=16, radius_mm=20.0, follow_click_sign=True, patch=(16, 48, 48))
    trainer = KneeRefinementTrainer(store, schema, "test", server)
    config, loaded, started_from = trainer._initial("promoted")
    assert started_from == version
    assert (config.init_filters, config.click_sigma_mm) == (8, 2.0)  # what the weights need
    assert (config.radius_mm, config.follow_click_sign, config.patch) == (20.0, True, (16, 48, 48))
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert trainer._initial("scratch")[0] == server


def test_the_reach_of_networks_a_server_trains_is_a_conf_option():
    from lib.configs.knee_refinement import click_config_from_conf

    assert click_config_from_conf({"refinement_reach_mm": "16"}).radius_mm == 16.0
    assert click_config_from_conf({}).radius_mm == ClickNetConfig().radius_mm
    for bad in ("0", "500"):
        with pytest.raises(ValueError, match="refinement_reach_mm"):
            click_config_from_conf({"refinement_reach_mm": bad})


def test_a_new_version_must_beat_the_promoted_network_measured_again_on_the_same_cases(schema, tmp_path):
    """The stored score of the promoted network is stale (0.0, as if measured on other cases). A run
    that cannot change the weights (learning rate 0, fine-tuning the promoted one) validates exactly
    as the promoted network does, so it must not be promoted; comparing with the stored 0.0 would."""
    from monailabel.datastore.local import LocalDatastore

    store = ModelStore(tmp_path / "refinement")
    config = ClickNetConfig(init_filters=8, patch=(16, 32, 32))
    incumbent = store.new_version()
    store.save(incumbent, click_state(config, build_click_network(config)), {"mean_dice": 0.0})
    store.promote(incumbent, 0.0)
    studies = tmp_path / "studies"
    studies.mkdir()
    trainer = KneeRefinementTrainer(store, schema, "test", config)
    summary = trainer({"max_epochs": 1, "iterations_per_epoch": 1, "batch_size": 1, "learning_rate": 0.0,
                       "synthetic_cases": 2, "validation_clicks": 1, "init": "promoted", "device": "cpu"},
                      LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False))
    assert summary["mean_dice"] == summary["promotion_bar"][incumbent] > 0.0
    assert not summary["promoted"] and store.promoted()["version"] == incumbent
    # The validation knee is the spare synthesised one: it has the structures OAI-ZIB knees lack.
    validated = store.metrics(summary["version"])["dice"]
    assert {"medial_meniscus", "fibula", "lateral_tibial_cartilage"} <= set(validated)
