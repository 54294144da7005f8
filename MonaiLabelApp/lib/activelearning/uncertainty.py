"""Active learning: the unlabelled image the current model is least sure of."""

from __future__ import annotations

import logging

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.activelearning.hand_outs import candidates
from lib.scoring.tta_uncertainty import TTAUncertaintyScoring

logger = logging.getLogger(__name__)


class MostUncertain(Strategy):
    def __init__(self, scoring: TTAUncertaintyScoring):
        super().__init__("The unlabelled image with the highest test-time-augmentation entropy")
        self.scoring = scoring

    def __call__(self, request, datastore: Datastore):
        free = candidates(datastore, datastore.get_unlabeled_images())  # not with another annotator
        if not free:
            return None
        # Scores made by another model version or other weights (or none yet) are refreshed first, so the
        # choice always reflects the model in use.
        version, stamp, _ = self.scoring.current_model(request.get("device"))
        self.scoring.score_images(datastore, self.scoring.stale_images(datastore, version, stamp, free),
                                  request.get("device"))
        scored = {i: self.scoring.current_score(datastore.get_image_info(i), version, stamp) for i in free}
        scored = {k: v for k, v in scored.items() if v is not None}
        if not scored:
            return None
        chosen = max(scored, key=scored.get)
        logger.info(f"Most uncertain of {len(scored)}: {chosen} ({scored[chosen]:.4f}, model {version})")
        return {"id": chosen, "score": scored[chosen], "model_version": version}
