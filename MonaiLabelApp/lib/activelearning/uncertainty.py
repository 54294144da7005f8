"""Active learning: the unlabelled image the current model is least sure of."""

from __future__ import annotations

import logging

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.infers.knee_segmentation import pick_device
from lib.scoring.tta_uncertainty import SCORE_KEY, TTAUncertaintyScoring

logger = logging.getLogger(__name__)


class MostUncertain(Strategy):
    def __init__(self, scoring: TTAUncertaintyScoring):
        super().__init__("The unlabelled image with the highest test-time-augmentation entropy")
        self.scoring = scoring

    def __call__(self, request, datastore: Datastore):
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        # Scores made by an older model version (or none yet) are refreshed first, so the choice
        # always reflects the model in use.
        version, _ = self.scoring.infer.segmenter(pick_device(request.get("device")))
        self.scoring.score_images(datastore, self.scoring.stale_images(datastore, version), request.get("device"))
        scored = {
            image_id: datastore.get_image_info(image_id).get(SCORE_KEY, {}).get("score")
            for image_id in images
        }
        scored = {k: v for k, v in scored.items() if v is not None}
        if not scored:
            return None
        chosen = max(scored, key=scored.get)
        logger.info(f"Most uncertain of {len(scored)}: {chosen} ({scored[chosen]:.4f}, model {version})")
        return {"id": chosen, "score": scored[chosen], "model_version": version}
