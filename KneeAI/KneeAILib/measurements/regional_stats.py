"""Per structure and subregion numbers: volume, areas, denuded area and thickness statistics.

Names follow the OAI nomenclature (Eckstein et al. 2006): cAB = bone area covered by cartilage,
dAB = denuded (bare) area inside the plate, tAB = cAB + dAB; thin = bone under cartilage too thin
(< ~0.7 mm) for the smoothed surfaces to measure, counted in neither. Thickness statistics are area-weighted
over cAB (each bone-surface vertex carries its share of the surface), in mm; ``mean_thickness_tab``
counts dAB as zero thickness (ThCtAB, the OAI's usual regional mean).
"""

from __future__ import annotations

import numpy as np

COLUMNS = ["structure", "region", "volume_mm3", "cab_mm2", "tab_mm2", "dab_mm2", "dab_percent", "thin_mm2",
           "mean_thickness_mm", "mean_thickness_tab_mm", "median_thickness_mm", "min_thickness_mm",
           "max_thickness_mm", "p05_thickness_mm", "p95_thickness_mm", "n_points"]


def region_row(structure: str, region: str, *, volume: float, area: np.ndarray, thickness: np.ndarray,
               covered: np.ndarray, denuded: np.ndarray, thin: np.ndarray) -> dict:
    """One table row; ``area``/``thickness``/``covered``/``denuded`` are per vertex of the region."""
    cab = float(area[covered].sum())
    dab = float(area[denuded].sum())
    tab = cab + dab
    row = {"structure": structure, "region": region, "volume_mm3": float(volume), "cab_mm2": cab,
           "tab_mm2": tab, "dab_mm2": dab, "dab_percent": 100.0 * dab / tab if tab > 0 else float("nan"),
           "thin_mm2": float(area[thin].sum()), "n_points": int(covered.sum())}
    if covered.any():
        t, w = thickness[covered], area[covered]
        row.update({
            "mean_thickness_mm": float(np.average(t, weights=w)),
            "mean_thickness_tab_mm": float((t * w).sum() / tab),
            "median_thickness_mm": weighted_quantile(t, w, 0.5),
            "min_thickness_mm": float(t.min()),
            "max_thickness_mm": float(t.max()),
            "p05_thickness_mm": weighted_quantile(t, w, 0.05),
            "p95_thickness_mm": weighted_quantile(t, w, 0.95),
        })
    else:
        row.update({k: float("nan") for k in COLUMNS if "thickness" in k})
    return {k: row[k] for k in COLUMNS}


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][min(np.searchsorted(cum, q * cum[-1]), len(values) - 1)])
