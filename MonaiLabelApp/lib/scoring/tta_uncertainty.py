"""Scoring for active learning: how unsure the current model is about each unlabelled image.

Score = mean entropy (nats) of the coarse network's test-time-augmented class probabilities over the
voxels it calls knee (not confidently background). Scores are stored in the datastore with the model
version that made them, so a new model version makes them stale and they are recomputed.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.infers.knee_segmentation import KneeSegmentation, pick_device
from lib.transforms.image_io import InputError, read_volume

logger = logging.getLogger(__name__)

SCORE_KEY = "knee_uncertainty"


def uncertainty(probabilities: np.ndarray) -> float:
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-7, 1.0))).sum(axis=0)
    knee = probabilities[0] < 0.9
    return float(entropy[knee].mean() if knee.any() else entropy.mean())


class TTAUncertaintyScoring(ScoringMethod):
    def __init__(self, infer: KneeSegmentation):
        super().__init__("Test-time-augmentation entropy of the knee model on unlabelled images")
        self.infer = infer

    def stale_images(self, datastore: Datastore, version: str) -> list[str]:
        return [
            image_id
            for image_id in datastore.get_unlabeled_images()
            if datastore.get_image_info(image_id).get(SCORE_KEY, {}).get("model_version") != version
        ]

    def score_images(self, datastore: Datastore, image_ids: list[str], device=None) -> dict[str, float]:
        version, segmenter = self.infer.segmenter(pick_device(device))
        scores = {}
        for image_id in image_ids:
            try:
                probabilities = segmenter.coarse_tta_probabilities(read_volume(datastore.get_image_uri(image_id)))
            except InputError as e:
                logger.warning(f"Cannot score {image_id}: {e}")
                continue
            scores[image_id] = uncertainty(probabilities)
            datastore.update_image_info(
                image_id, {SCORE_KEY: {"score": scores[image_id], "model_version": version, "ts": int(time.time())}}
            )
        return scores

    def __call__(self, request, datastore: Datastore):
        version, _ = self.infer.segmenter(pick_device(request.get("device")))
        stale = self.stale_images(datastore, version)
        scores = self.score_images(datastore, stale, request.get("device"))
        logger.info(f"Scored {len(scores)} image(s) with model {version}")
        return {"model_version": version, "scored": scores}
