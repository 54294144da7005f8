"""The infer tasks serve the weights the model folder holds now. Training saves each better epoch under
the SAME version name and promotes it again, so a cache keyed on the version name alone kept serving
the first epoch's weights until the server restarted."""

from __future__ import annotations

import numpy as np
import torch
from kneeai_testing import ROOT, TINY_MODEL_CONF

from KneeAILib.schema import KneeSchema
from lib.model_store import ModelStore

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")
CPU = torch.device("cpu")


def test_the_click_network_is_reloaded_when_training_saves_a_better_epoch_under_the_same_version(tmp_path):
    from lib.infers.knee_refinement import ImageCache, KneeRefinement
    from lib.interactive.network import ClickNetConfig, build_click_network, click_state

    store = ModelStore(tmp_path / "refinement")
    version = store.new_version()
    config = ClickNetConfig(init_filters=8, patch=(16, 16, 16))
    network = build_click_network(config)
    last_layer = network.conv_final[2].conv

    def save_network_proposing(everything: bool) -> None:
        """Saves and promotes v0001 as the trainer does: a network whose proposal is the same at every
        voxel (the last layer's weights zero, its bias the sign), so what it proposes shows which weights
        are served."""
        with torch.no_grad():
            last_layer.weight.zero_()
            last_layer.bias.fill_(1.0 if everything else -1.0)
        store.save(version, click_state(config, network), {})
        store.promote(version, None)

    task = KneeRefinement(store, SCHEMA, ImageCache(), "refinement")
    block = np.zeros((8, 8, 8), np.float32)

    def served_proposal() -> np.ndarray:
        return task.refiner(CPU).propose(block, block > 0, [(4, 4, 4)], [], (1.0, 1.0, 1.0))

    save_network_proposing(everything=False)
    assert not served_proposal().any()
    save_network_proposing(everything=True)  # a better epoch, same version name
    assert served_proposal().all()


def test_the_segmentation_network_is_reloaded_when_training_saves_a_better_epoch_under_the_same_version(tmp_path):
    from lib.configs.knee_segmentation import model_config_from_conf
    from lib.infers.knee_segmentation import KneeSegmentation
    from lib.networks import KneeNetworks

    config = model_config_from_conf(TINY_MODEL_CONF)
    store = ModelStore(tmp_path / "segmentation")
    version = store.new_version()
    task = KneeSegmentation(store, SCHEMA, config, "segmentation")
    for epoch in (1, 2):  # the second a better epoch, saved and promoted under the same version name
        saved = KneeNetworks.create(config, seed=epoch).state()
        store.save(version, saved, {})
        store.promote(version, None)
        served = task.segmenter(CPU)[1].networks.fine.state_dict()
        assert all(torch.equal(served[name], tensor) for name, tensor in saved["fine"].items())
