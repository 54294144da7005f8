"""Which unlabelled images are with an annotator: the next-case strategies offer the others first.

MONAI Label's /activelearning records each hand-out in the image's info ("strategy": {name: {"ts": ...}}).
Client ids do not tell annotators apart (KneeAI's client sends none, the stock Slicer plugin the same one
for everybody), so an image handed out by any strategy in the last RESERVED_SECONDS counts as taken.
"""

from __future__ import annotations

import logging
import random
import time

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

# Two annotators asking one after the other got the same case and labelled it twice.
RESERVED_SECONDS = 3600


def last_handed_out(info: dict) -> float:
    """When the image was last handed out (0: never); MONAI Label records it under "strategy"."""
    records = info.get("strategy")
    if not isinstance(records, dict):
        return 0.0
    times = [r.get("ts") for r in records.values() if isinstance(r, dict)]
    return max((float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)), default=0.0)


def candidates(datastore: Datastore, images: list[str]) -> list[str]:
    """The images of ``images`` no annotator was handed in the last RESERVED_SECONDS; when every one is
    with an annotator, all of them (a case labelled twice beats an annotator left without work, and the
    one asking may be the annotator who was handed it, back after a restart)."""
    now = time.time()
    free = [i for i in images if now - last_handed_out(datastore.get_image_info(i)) >= RESERVED_SECONDS]
    if images and not free:
        logger.info(f"All {len(images)} unlabelled image(s) were handed out in the last {RESERVED_SECONDS} s: "
                    "offering them again")
    return free or list(images)


class RandomUnreserved(Strategy):
    """A random unlabelled image, one not with an annotator when there is one. (MONAI Label's Random
    weighs images by the time since its own last hand-out: an image another strategy handed out counts
    as never handed out, and when every image was handed out within the same second all weights are 0
    and the request fails with a server error.)"""

    def __init__(self):
        super().__init__("A random unlabelled image, not one handed out in the last hour when there is one")

    def __call__(self, request, datastore: Datastore):
        images = candidates(datastore, datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not images:
            return None
        return {"id": random.choice(images)}
