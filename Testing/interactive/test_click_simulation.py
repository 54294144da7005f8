"""The simulated user: the next click goes to the centre of the largest error region (known answers)."""

from __future__ import annotations

import numpy as np

from lib.interactive.clicks import click_map, largest_error_click
from lib.interactive.simulation import error_clicks, run_clicks


def test_positive_click_at_the_centre_of_the_largest_missed_region():
    truth = np.zeros((20, 30, 40), bool)
    truth[2:9, 5:12, 10:17] = True  # missed 7x7x7 cube, centre (k, j, i) = (5, 8, 13)
    truth[12:15, 20:23, 30:33] = True  # missed 3x3x3: smaller
    prediction = np.zeros_like(truth)
    prediction[15:17, 0:2, 0:2] = True  # a false region of 8 voxels: smaller still
    click = largest_error_click(prediction, truth)
    assert click.positive and click.ijk == (13, 8, 5) and click.region_voxels == 343


def test_negative_click_inside_the_largest_false_region_and_none_when_perfect():
    truth = np.zeros((20, 20, 20), bool)
    truth[5:10, 5:10, 5:10] = True
    prediction = truth.copy()
    prediction[12:19, 2:5, 2:17] = True  # false slab 7x3x15: centre (15, 3, 9)
    click = largest_error_click(prediction, truth)
    assert not click.positive and click.ijk == (9, 3, 15)
    assert largest_error_click(truth, truth) is None


def test_centre_is_inside_a_curved_region_where_the_centroid_is_not():
    truth = np.zeros((9, 40, 40), bool)
    truth[:, 5:35, 5:10] = True  # an L: its centroid lies outside it
    truth[:, 30:35, 5:35] = True
    click = largest_error_click(np.zeros_like(truth), truth)
    i, j, k = click.ijk
    assert truth[k, j, i]


def test_spacing_decides_the_centre_in_millimetres():
    truth = np.zeros((11, 11, 31), bool)
    truth[:, :, :] = True
    # Anisotropic: 3 mm along k makes the k axis the long one in mm; the centre stays in the middle.
    click = largest_error_click(np.zeros_like(truth), truth, spacing_zyx=(3.0, 1.0, 1.0))
    assert click.ijk == (15, 5, 5)


def test_click_map_peaks_at_the_click():
    maps = click_map((10, 10, 10), [(2, 3, 4)], (1.0, 1.0, 1.0), sigma_mm=2.0)
    assert maps[4, 3, 2] == 1.0 and np.unravel_index(np.argmax(maps), maps.shape) == (4, 3, 2)


def test_error_clicks_visit_regions_largest_first_and_run_clicks_reaches_the_truth():
    truth = np.zeros((20, 20, 20), bool)
    truth[2:8, 2:8, 2:8] = True
    truth[12:15, 12:15, 12:15] = True
    fg, bg = error_clicks(np.zeros_like(truth), truth, (1, 1, 1), 5)
    assert fg == [(4, 4, 4), (13, 13, 13)] and bg == []

    labels = np.zeros(truth.shape, np.uint8)

    def oracle(current, foreground, background, last):  # fills the error region under the click
        from scipy import ndimage

        out = current.copy()
        components, _ = ndimage.label(truth & (current != 3))
        i, j, k = last
        out[components == components[k, j, i]] = 3
        return out

    trace = run_clicks(labels, truth, 3, oracle, (1, 1, 1), max_clicks=10)
    assert len(trace.latency_s) == 2 and trace.dice[-1] == 1.0 and trace.dice[0] == 0.0


def test_a_training_sample_is_the_same_as_from_the_whole_volume(monkeypatch):
    """The trainer works on the structure's region only (for speed): its samples must equal those
    made from the whole volume, or the shortcut would cut error regions or crops short."""
    from lib.interactive.network import ClickNetConfig
    from lib.trainers import knee_refinement

    zz, yy, xx = np.ogrid[:60, :150, :150]
    labels = np.zeros((60, 150, 150), np.uint8)
    labels[(zz - 30) ** 2 + (yy - 75) ** 2 + (xx - 75) ** 2 <= 12**2] = 3  # a small "patella"
    image = np.random.default_rng(0).normal(1.0, 0.2, labels.shape).astype(np.float32) + labels  # texture everywhere
    spacing = (0.8, 0.8, 0.8)
    config = ClickNetConfig(init_filters=8, patch=(16, 64, 64))
    region = knee_refinement.sample_region(labels == 3, spacing, config.patch)
    assert any(s.stop - s.start < n for s, n in zip(region, labels.shape))  # the shortcut does cut here
    samples = [knee_refinement.training_sample(image, labels, spacing, config, np.random.default_rng(seed), 5)
               for seed in range(6)]
    monkeypatch.setattr(knee_refinement, "sample_region", lambda truth, *_: tuple(slice(0, n) for n in truth.shape))
    for seed, (x, y) in enumerate(samples):
        wx, wy = knee_refinement.training_sample(image, labels, spacing, config, np.random.default_rng(seed), 5)
        assert y.any() and np.array_equal(y, wy), f"seed {seed}"
        assert np.array_equal(x[1:], wx[1:]), f"seed {seed}: mask or clicks differ"
        assert np.allclose(x[0], wx[0], atol=1e-5), f"seed {seed}: image crop differs"


def test_a_group_label_such_as_oai_zib_tibial_cartilage_is_trained_on():
    from lib.interactive.network import ClickNetConfig
    from lib.trainers.knee_refinement import training_sample

    labels = np.zeros((30, 60, 60), np.uint8)
    labels[12:16, 10:50, 10:50] = 20  # tibial cartilage, both plates as one (schema group 20)
    image = np.random.default_rng(1).normal(1.0, 0.1, labels.shape).astype(np.float32) + (labels > 0)
    config = ClickNetConfig(init_filters=8, patch=(16, 32, 32))
    for seed in range(4):
        sample = training_sample(image, labels, (0.7, 0.4, 0.4), config, np.random.default_rng(seed), 3)
        assert sample is not None and sample[1].any(), f"seed {seed}: no sample of the group"
