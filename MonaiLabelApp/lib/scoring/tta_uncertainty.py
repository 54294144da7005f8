"""Scoring for active learning: how unsure the current model is about each unlabelled image.

Score = mean entropy (nats) of the coarse network's test-time-augmented class probabilities over the
voxels it calls knee (not confidently background). Scores are stored in the datastore with the model
version that made them and a stamp of that version's weights file (training saves each better epoch
again under the same version name), so a new version, or new weights of the same version, makes them
stale and they are recomputed.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.infers.knee_segmentation import KneeSegmentation, pick_device, weights_on_disk
from lib.transforms.image_io import InputError, read_mri

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

    def weights_stamp(self) -> str | None:
        """Which saving of the promoted version's weights is on disk ("v0005:<inode>:<mtime>:<size>");
        None before any promotion."""
        promoted = self.infer.store.promoted()
        if not promoted:
            return None
        version = promoted["version"]
        try:
            return ":".join(str(v) for v in (version, *weights_on_disk(self.infer.store, version)))
        except FileNotFoundError:
            return None

    def current_model(self, device=None):
        """(version, weights stamp, segmenter). The stamp is read before the segmenter is loaded: weights
        saved again in between give a stamp older than the weights used, so those scores are made again
        next time instead of passing for current."""
        stamp = self.weights_stamp()
        version, segmenter = self.infer.segmenter(pick_device(device))
        return version, stamp, segmenter

    @staticmethod
    def current_score(info: dict, version: str, stamp: str | None) -> float | None:
        """The stored score if the model in use made it, else None."""
        record = info.get(SCORE_KEY)
        if not isinstance(record, dict) or record.get("model_version") != version or record.get("weights") != stamp:
            return None
        return record.get("score")

    def stale_images(self, datastore: Datastore, version: str, stamp: str | None,
                     image_ids: list[str] | None = None) -> list[str]:
        return [
            image_id
            for image_id in (datastore.get_unlabeled_images() if image_ids is None else image_ids)
            if self.current_score(datastore.get_image_info(image_id), version, stamp) is None
        ]

    def score_images(self, datastore: Datastore, image_ids: list[str], device=None) -> dict[str, float]:
        version, stamp, segmenter = self.current_model(device)
        scores = {}
        for image_id in image_ids:
            try:
                probabilities = segmenter.coarse_tta_probabilities(read_mri(datastore.get_image_uri(image_id)))
            except InputError as e:
                logger.warning(f"Cannot score {image_id}: {e}")
                continue
            scores[image_id] = uncertainty(probabilities)
            datastore.update_image_info(image_id, {SCORE_KEY: {
                "score": scores[image_id], "model_version": version, "weights": stamp, "ts": int(time.time())}})
        return scores

    def __call__(self, request, datastore: Datastore):
        version, stamp, _ = self.current_model(request.get("device"))
        stale = self.stale_images(datastore, version, stamp)
        scores = self.score_images(datastore, stale, request.get("device"))
        logger.info(f"Scored {len(scores)} image(s) with model {version}")
        return {"model_version": version, "scored": scores}
