"""A tiny round of the knee_refinement train task on a real server writes a new model version, in
the refinement's own model folder, and the refinement task keeps answering afterwards."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from KneeAILib.client import KneeAIClient
from lib.trainers.knee_refinement import VALIDATION_STRUCTURES


@pytest.fixture(scope="module")
def training_server(server_pool, sample_studies, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("refine_seg_model")
    refinement_dir = tmp_path_factory.mktemp("refine_click_model")
    url = server_pool.start(sample_studies, model_dir, {
        "refinement_model_dir": str(refinement_dir), "refinement_filters": "8", "refinement_patch": "16,32,32"})
    return url, refinement_dir


def test_tiny_refinement_training_round_writes_a_version(training_server, tmp_path):
    url, refinement_dir = training_server
    client = KneeAIClient(url, download_dir=tmp_path)
    client.train_start("knee_refinement", {"max_epochs": 1, "iterations_per_epoch": 2, "batch_size": 1,
                                           "validation_clicks": 1, "seed": 3})
    # The run happens in a subprocess; its own train_stats.json (served in /info) says when it is done.
    deadline = time.monotonic() + 300
    stats = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/info/") as response:
            stats = json.loads(response.read())["train_stats"].get("knee_refinement", {})
        if stats.get("status") == "done":
            break
        time.sleep(2)
    assert stats.get("status") == "done", stats
    metrics = json.loads((refinement_dir / "versions" / "v0001" / "metrics.json").read_text())
    assert (refinement_dir / "versions" / "v0001" / "model.pt").is_file()
    assert metrics["validation"] == "mean Dice over simulated clicks 1-1" and metrics["dice"]
    assert set(metrics["dice"]) <= set(VALIDATION_STRUCTURES)
    assert "random_walker_baseline" in metrics
    assert stats["version"] == "v0001"
    # The server ran it in a background process at lower CPU priority, so clicks are answered first.
    assert stats["niceness"] >= 10
    # Promoted only when it beats the random walker on the same protocol; either way it is recorded.
    promoted = (refinement_dir / "promoted.json").is_file()
    assert promoted == (stats["mean_dice"] > stats["random_walker_mean_dice"])
