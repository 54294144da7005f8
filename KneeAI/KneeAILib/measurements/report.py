"""The HTML report: knee side and frame, the regional table, a thickness map per plate and, for two
visits, the change table and change maps. Self-contained (pictures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from .longitudinal import VisitComparison
from .measure import KneeMeasurement

_TABLE = [("structure", "Structure"), ("region", "Region"), ("volume_mm3", "Volume (mm³)"),
          ("cab_mm2", "cAB (mm²)"), ("dab_mm2", "Denuded dAB (mm²)"), ("thin_mm2", "Too thin to measure (mm²)"),
          ("mean_thickness_mm", "Mean (mm)"),
          ("mean_thickness_tab_mm", "Mean over tAB (mm)"), ("median_thickness_mm", "Median (mm)"),
          ("min_thickness_mm", "Min (mm)"), ("max_thickness_mm", "Max (mm)")]
_CHANGE = [("structure", "Structure"), ("region", "Region"), ("visit1_mean_thickness_tab_mm", "Visit 1 (mm)"),
           ("visit2_mean_thickness_tab_mm", "Visit 2 (mm)"), ("change_mm", "Change (mm)"),
           ("change_percent", "Change (%)"), ("mapped_mean_change_mm", "Point-wise change (mm)")]


def html_report(m: KneeMeasurement, pictures: dict[str, Path], comparison: VisitComparison | None,
                title: str) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}td:first-child,td:nth-child(2)"
             "{text-align:left}figure{display:inline-block;margin:1em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>Knee side: <b>{m.frame.side}</b> (evidence: {html.escape(str(m.frame.side_evidence))}). "
             "Lengths in mm, areas in mm², volumes in mm³; meshes in patient LPS millimetres. "
             "Thickness: Laplace field lines between the bone surface and the cartilage surface, at every "
             "point of the bone surface; statistics are area-weighted over the covered bone (cAB); "
             "'mean over tAB' counts denuded bone as zero. Denuded area is counted where bare bone is "
             "enclosed by the plate; bone under cartilage thinner than about 0.7 mm is listed separately "
             "(too thin to measure) and counted as neither covered nor denuded.</p>"]
    for w in m.warnings:
        parts.append(f"<p><b>Note:</b> {html.escape(w)}</p>")
    parts.append(_table(m.rows, _TABLE))
    parts.append("<h2>Thickness maps</h2>")
    parts.append("<p>Medial (M) on the left, lateral (L) on the right, for a left and a right knee alike. "
                 "Tibial plates seen from above, anterior at the top; the patella seen from behind, superior at "
                 "the top; the femur unrolled around its distal centre, trochlea at the top.</p>")
    for name in m.plates:
        if name in pictures:
            parts.append(_figure(pictures[name], f"{name.replace('_', ' ')}: thickness (mm)"))
    if comparison is not None:
        parts.append("<h2>Change between visits (visit 2 - visit 1)</h2>")
        parts.append(_table(comparison.rows, _CHANGE))
        for name in m.plates:
            key = name + "_change"
            if key in pictures:
                parts.append(_figure(pictures[key], f"{name.replace('_', ' ')}: change (mm), red = loss"))
    parts.append(f"<p>Computed in {m.seconds:.1f} s.</p></body></html>")
    return "\n".join(parts)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in columns)
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            text = "–" if isinstance(v, float) and not math.isfinite(v) else (f"{v:.2f}" if isinstance(v, float) else v)
            cells.append(f"<td>{html.escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
