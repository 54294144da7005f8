"""Which tibial cartilage plate is which, in a predicted knee: split by geometry, named by anatomy.

Most training label maps (OAI-ZIB) mark tibial cartilage as one structure, so the network learns where
tibial cartilage is but hardly which plate is medial: on the real DESS knee it called both plates
lateral, and measuring that proposal failed ("medial tibial plate missing"). The two plates are
separated by the intercondylar gap, which the measurements' knee frame finds
(``KneeAILib.measurements.frame``); each plate then gets ONE name. The name comes from the network
when it names the two plates opposite ways, otherwise from the frame's anatomical evidence (split
menisci, fibula, plate shape, trochlea: the same evidence that decides the side when measuring).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from KneeAILib.measurements.errors import MissingBoneError, NoCartilageError
from KneeAILib.measurements.frame import knee_frame
from KneeAILib.measurements.labelmap import LabelMap

# A gap between the plates: at most 3 % of the tibial cartilage within 2 mm of the split (predicted
# plates on the real DESS knee: under 1 %, the 21 expert maps: 0 %; one plate cut through its
# middle: 13-16 %), and the smaller plate at least 10 % of the cartilage (an under-segmented
# medial plate on the real DESS knee: 18 %).
GAP_HALF_WIDTH_MM = 2.0
MAX_CARTILAGE_IN_GAP = 0.03
MIN_PLATE_SHARE = 0.10


def name_tibial_plates(labels: np.ndarray, reference: sitk.Image, schema) -> str:
    """Relabel the tibial cartilage of ``labels`` (schema values, ``reference``'s grid) in place, one
    name per plate. Returns how the plates were named, or why they were left as they were."""
    medial, lateral = schema.value_of("medial_tibial_cartilage"), schema.value_of("lateral_tibial_cartilage")
    tibial = (labels == medial) | (labels == lateral)
    if not tibial.any():
        return "no tibial cartilage"
    unsplit = np.where(tibial, schema.value_of("tibial_cartilage"), labels)
    label_map = LabelMap.on_grid_of(unsplit, reference)
    try:
        frame, medial_mask = knee_frame(label_map)
    except (MissingBoneError, NoCartilageError) as e:  # e.g. one plate only: nothing to split
        return f"left as predicted: {e}"
    # knee_frame expects two plates and cuts wherever cartilage is thinnest: a single plate (the
    # network found only one) would be cut in two. Two plates leave an empty gap between them.
    medial_mm = frame.coordinates(label_map.physical_points(np.argwhere(tibial)))[:, 0]
    in_gap = float(np.mean(np.abs(medial_mm) < GAP_HALF_WIDTH_MM))
    smaller_side = float(min(np.mean(medial_mm > 0), np.mean(medial_mm < 0)))
    if in_gap > MAX_CARTILAGE_IN_GAP or smaller_side < MIN_PLATE_SHARE:
        return (f"left as predicted: no gap between two plates ({in_gap:.0%} of the cartilage within "
                f"{GAP_HALF_WIDTH_MM} mm of the thinnest place, {smaller_side:.0%} on its smaller side)")
    frame_medial, frame_lateral = tibial & medial_mask, tibial & ~medial_mask
    # Most of each plate carries the other plate's name: the network tells them apart, the other way.
    network_swaps = np.mean(labels[frame_medial] == lateral) > 0.5 and np.mean(labels[frame_lateral] == medial) > 0.5
    if network_swaps:
        frame_medial, frame_lateral = frame_lateral, frame_medial
        how = "named by the network"
    else:
        evidence = ", ".join(f"{k}: {v}" for k, v in frame.side_evidence.items())
        how = f"named by anatomy ({evidence})"
    labels[frame_medial] = medial
    labels[frame_lateral] = lateral
    return f"split at the intercondylar gap ({in_gap:.1%} of the cartilage within {GAP_HALF_WIDTH_MM} mm), {how}"
