"""Per-structure figures over several knees (mean ± sd), and the Markdown table a person reads.

Which cases count, per structure (see ``metrics.py`` for the statuses):
- Dice: every knee whose reference labels the structure. A structure the model missed entirely
  (``empty_prediction``) counts as Dice 0, and one with no surface to measure distances on
  (``no_surface``: a mask filling the field of view) with its Dice: leaving them out would flatter
  the model.
- HD95 and ASD: only knees where both sides have the structure (``ok``): a distance to nothing is
  undefined. ``missed`` says how many knees that left out.
- Knees whose reference does not label the structure at all (e.g. menisci in OAI-ZIB, or the medial/
  lateral tibial plates where OAI-ZIB labels them as one) are not counted; the group row
  (tibial cartilage) scores them instead.
sd is the sample standard deviation (n - 1); it is omitted for a single knee.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from lib.evaluation.metrics import EMPTY_PREDICTION, NO_SURFACE, OK, StructureScore


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return round(mean, 4), (round(sd, 4) if sd is not None else None)


def summarise(cases: Sequence[Mapping[str, StructureScore]], order: Sequence[str] | None = None) -> dict[str, dict]:
    """structure key -> {n, missed, dice_mean, dice_sd, hd95_mm_mean, ..., asd_mm_sd}."""
    keys = list(order) if order else sorted({k for case in cases for k in case})
    summary = {}
    for key in keys:
        scores = [case[key] for case in cases if key in case]
        dice = [s.dice for s in scores if s.status in (OK, EMPTY_PREDICTION, NO_SURFACE)]
        hd95 = [s.hd95_mm for s in scores if s.status == OK and not math.isnan(s.hd95_mm)]
        asd = [s.asd_mm for s in scores if s.status == OK and not math.isnan(s.asd_mm)]
        row = {"n": len(dice), "missed": sum(s.status == EMPTY_PREDICTION for s in scores)}
        for name, values in (("dice", dice), ("hd95_mm", hd95), ("asd_mm", asd)):
            row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd(values)
        summary[key] = row
    return summary


def structure_order(schema) -> list[str]:
    """Schema structures in value order, then the groups."""
    return [s.key for s in sorted(schema.structures, key=lambda s: s.value)] + [g.key for g in schema.groups]


def display_names(schema) -> dict[str, str]:
    names = {s.key: s.name for s in schema.structures}
    names.update({g.key: "Tibial cartilage (medial + lateral)" if g.key == "tibial_cartilage" else g.name
                  for g in schema.groups})
    return names


def _cell(mean, sd, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def markdown_table(summary: Mapping[str, Mapping], names: Mapping[str, str], first_column: str = "Structure") -> str:
    lines = [
        f"| {first_column} | n | Dice | HD95 (mm) | ASD (mm) | missed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in summary.items():
        if row["n"] == 0:
            lines.append(f"| {names.get(key, key)} | 0 | not labelled in the reference | | | |")
            continue
        lines.append(
            f"| {names.get(key, key)} | {row['n']} | {_cell(row['dice_mean'], row['dice_sd'], 3)} | "
            f"{_cell(row['hd95_mm_mean'], row['hd95_mm_sd'], 2)} | {_cell(row['asd_mm_mean'], row['asd_mm_sd'], 2)} | "
            f"{row['missed']} |"
        )
    return "\n".join(lines)
