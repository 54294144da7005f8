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

    seen = []
    trace = run_clicks(labels, truth, 3, oracle, (1, 1, 1), max_clicks=10,
                       observe=lambda before, after, click: seen.append((before.copy(), after.copy(), click)))
    assert len(trace.latency_s) == 2 and trace.dice[-1] == 1.0 and trace.dice[0] == 0.0
    # The observer sees each update: the map before it, the map it returned, and its click.
    assert [c.ijk for _, _, c in seen] == [(4, 4, 4), (13, 13, 13)]
    assert not seen[0][0].any() and np.array_equal(seen[0][1], seen[1][0])
    assert np.array_equal(seen[1][1], trace.labels)


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


def test_clicks_in_the_loop_place_the_next_click_on_what_the_refiner_left():
    """Samples made the way the server is used: the first click's region is refined (here by an
    oracle that fixes everything within its reach), so the next click goes to the OTHER error region,
    and the mask the network sees is the refined one. A refiner that fixes nothing would leave the
    next click in the first region."""
    from lib.interactive.refine import Refiner
    from lib.trainers.knee_refinement import _clicks_in_the_loop

    truth = np.zeros((20, 40, 120), bool)
    truth[8:12, 5:35, 5:115] = True  # a cartilage-like slab, 110 mm long at 1 mm voxels
    mask = truth.copy()
    mask[8:12, 5:35, 5:25] = False  # missed region A (the larger)
    mask[8:12, 5:25, 95:115] = False  # missed region B, > 20 mm from A
    image = truth.astype(np.float32)
    oracle = Refiner("oracle", lambda image, current, fg, bg, spacing: image > 0.5, radius_mm=20.0,
                     keep_connected=False, follow_click_sign=True)
    refined, fg, bg, newest = _clicks_in_the_loop(image, mask, truth, (1.0, 1.0, 1.0), oracle, rounds=1)
    assert not bg and len(fg) == 2 and newest == fg[-1]
    first, second = fg
    assert 5 <= first[0] < 25 and 95 <= second[0] < 115, (first, second)
    assert refined[8:12, 5:35, 5:25].all() and not refined[8:12, 5:25, 95:115].any()

    idle = Refiner("idle", lambda image, current, fg, bg, spacing: current, radius_mm=20.0)
    _, fg, _, newest = _clicks_in_the_loop(image, mask, truth, (1.0, 1.0, 1.0), idle, rounds=1)
    assert 5 <= newest[0] < 25, "nothing was refined, so the next click stays in region A"


def test_a_training_sample_with_the_refiner_in_the_loop_is_centred_on_the_newest_click():
    from lib.interactive.network import ClickNetConfig
    from lib.interactive.refine import Refiner
    from lib.trainers.knee_refinement import training_sample

    labels = np.zeros((30, 80, 80), np.uint8)
    labels[12:16, 10:70, 10:70] = 4
    image = labels.astype(np.float32) / 4
    config = ClickNetConfig(init_filters=8, patch=(16, 32, 32))
    # Refines only the click's own voxel (the write-back forces it): the mask barely changes, so the
    # newest click is still in an error region, and that is where the crop must be centred.
    idle = Refiner("idle", lambda image, current, fg, bg, spacing: current, radius_mm=5.0)
    centred = 0
    for seed in range(6):
        x, y = training_sample(image, labels, (1.0, 1.0, 1.0), config, np.random.default_rng(seed), 3, in_the_loop=idle)
        z, yy, xx = (s // 2 for s in config.patch)
        c = max([(z, yy, xx), (z, yy, config.patch[2] - 1 - xx)], key=lambda p: max(x[2][p], x[3][p]))  # flipped?
        clicked = max(x[2][c], x[3][c]) == 1.0
        wrong = x[1][c] != y[0][c]
        centred += clicked and wrong
        assert clicked, f"seed {seed}: no click at the crop's centre"
    assert centred >= 4, "the crop must sit on the newest click, which lies in an error region"


def test_mean_over_clicks_keeps_the_last_dice_when_the_structure_was_right_early():
    from lib.trainers.knee_refinement import mean_over_clicks

    assert mean_over_clicks([0.5, 1.0], 3) == 1.0
    assert abs(mean_over_clicks([0.5, 0.9, 0.7, 0.8], 3) - 0.8) < 1e-9
    assert abs(mean_over_clicks([0.5, 0.9, 0.7, 0.8, 0.1], 3) - 0.8) < 1e-9


def test_one_synthesised_knee_in_four_validates_and_one_always_trains():
    from lib.trainers.knee_refinement import validating_share

    assert validating_share(0) == 0
    assert validating_share(1) == 0  # one knee trains (the trainer validates on what it has)
    assert validating_share(2) == 1
    assert validating_share(6) == 1
    assert validating_share(8) == 2
