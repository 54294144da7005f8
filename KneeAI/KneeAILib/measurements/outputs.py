"""Write every output of a measurement: JSON and CSV of all numbers, meshes, map pictures, HTML report."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ..atomic_files import write_text_atomically
from ..png import write_png
from .labelmap import LabelMap
from .longitudinal import CHANGE_COLUMNS, VisitComparison, compare_visits
from .measure import KneeMeasurement, measure_knee
from .mesh_io import write_ply, write_stl, write_vtp
from .regional_stats import COLUMNS
from .report import html_report
from .structure_meshes import structure_mesh
from .thickness_map_image import map_picture, plate_map_coordinates, rasterise

STRUCTURES = {1: "femur", 2: "tibia", 3: "patella", 4: "fibula", 5: "femoral_cartilage",
              6: "medial_tibial_cartilage", 7: "lateral_tibial_cartilage", 8: "patellar_cartilage",
              9: "medial_meniscus", 10: "lateral_meniscus", 20: "tibial_cartilage"}
THICKNESS_RANGE_MM = (0.0, 4.0)
CHANGE_RANGE_MM = (-1.0, 1.0)


def measure_and_write(labels: LabelMap, out_dir: str | Path, *, side: str | None = None,
                      second_visit: LabelMap | None = None, meshes: bool = True,
                      title: str = "KneeAI knee measurements",
                      ) -> tuple[KneeMeasurement, VisitComparison | None, dict[str, Path]]:
    """Measure a knee (and its change at ``second_visit``) and write every output to ``out_dir``: what
    the command line and the Slicer module both run. Returns the measurement, the comparison (None
    without a second visit) and the files written. Each visit's side is detected on its own unless
    ``side`` is given, so that a left knee given as the second visit of a right one is refused, not
    reported as its plates' change."""
    m = measure_knee(labels, side=side)
    comparison = None
    if second_visit is not None:
        comparison = compare_visits(labels, m, second_visit, measure_knee(second_visit, side=side))
    return m, comparison, write_all(out_dir, labels, m, comparison=comparison, meshes=meshes, title=title)


MANIFEST = "kneeai_outputs.txt"  # the files the last measurement wrote into its folder, one name per line


def case_folder(base: str | Path, name: str) -> Path:
    """The report folder of one knee under ``base``: a folder per segmentation, so that measuring the
    next knee does not replace this one's report. The name is reduced to a plain folder name."""
    plain = "".join(c if c.isalnum() or c in " ._-" else "_" for c in name).strip(" .") or "knee"
    return Path(base) / plain[:100]


def write_all(out_dir: str | Path, labels: LabelMap, m: KneeMeasurement, *, comparison: VisitComparison | None = None,
              meshes: bool = True, title: str = "KneeAI knee measurements") -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = _write_outputs(out, labels, m, comparison, meshes, title)
    _remove_earlier_outputs(out, written.values())
    return written


def _remove_earlier_outputs(out: Path, written) -> None:
    """Removes the files an earlier measurement wrote here that this one did not (a change map without a
    second visit now, the mesh of a structure now absent), so the folder never mixes two measurements;
    only files named in the earlier manifest, never anything else in the folder. Then records this one."""
    names = sorted({Path(p).name for p in written})
    manifest = out / MANIFEST
    if manifest.is_file():
        for name in set(manifest.read_text(encoding="utf-8").split("\n")) - set(names) - {"", MANIFEST}:
            if Path(name).name == name:  # a plain file name of this folder, as written
                (out / name).unlink(missing_ok=True)
    write_text_atomically(manifest, "\n".join(names) + "\n")


def _write_outputs(out: Path, labels: LabelMap, m: KneeMeasurement, comparison: VisitComparison | None,
                   meshes: bool, title: str) -> dict[str, Path]:
    written: dict[str, Path] = {}
    drawn = _map_pictures(out, m, comparison)  # the step that can fail on odd data: before any write
    doc = m.to_dict()
    if comparison is not None:
        doc["comparison"] = comparison.to_dict()
    written["json"] = _write_text(out / "measurements.json", json.dumps(_jsonable(doc), indent=1))
    written["csv"] = _write_text(out / "measurements.csv", _csv(m.rows, COLUMNS))
    if comparison is not None:
        written["change_csv"] = _write_text(out / "thickness_change.csv", _csv(comparison.rows, CHANGE_COLUMNS))
    pictures = {}
    for key, (path, rgb) in drawn.items():
        write_png(rgb, path)
        pictures[key] = path
    for name, plate in m.plates.items():
        t = plate.thickness
        values = np.where(t.covered, t.thickness, 0.0)
        if meshes:
            scalars = {"thickness_mm": values, "in_plate": plate.in_plate.astype(float),
                       "denuded": plate.denuded.astype(float),
                       "subregion": _region_index(plate.region, plate.rule.names())}
            if comparison is not None and name in comparison.change_maps:
                scalars["thickness_change_mm"] = comparison.change_maps[name]
            written[f"{name}_vtp"] = write_vtp(out / f"{name}_on_{t.bone}.vtp", t.vertices, t.triangles, scalars,
                                               "thickness_mm")
            written[f"{name}_ply"] = write_ply(out / f"{name}_on_{t.bone}.ply", t.vertices, t.triangles, scalars)
    written.update({f"{k}_png": v for k, v in pictures.items()})
    if meshes:
        for value in sorted(set(np.unique(labels.array).tolist()) - {0}):
            verts, tris = structure_mesh(labels, value)
            if len(tris):
                written[f"{STRUCTURES.get(value, value)}_stl"] = write_stl(
                    out / f"{STRUCTURES.get(value, f'label_{value}')}.stl", verts, tris)
    written["html"] = _write_text(out / "report.html", html_report(m, pictures, comparison, title))
    return written


def _map_pictures(out: Path, m: KneeMeasurement, comparison: VisitComparison | None,
                  ) -> dict[str, tuple[Path, np.ndarray]]:
    """Every map picture, drawn before any of them is written (with the numbers before them): a drawing
    that fails must not leave a folder with part of this measurement over part of the last one. A
    plate with no point matched at the second visit gets no change map."""
    pictures = {}
    femur_centre = m.plates["femoral_cartilage"].rule.centre if "femoral_cartilage" in m.plates else np.zeros(3)
    for name, plate in m.plates.items():
        t = plate.thickness
        xy = plate_map_coordinates(name, m.frame.coordinates(t.vertices), femur_centre)
        img, _ = rasterise(xy, np.where(t.covered, t.thickness, 0.0), plate.in_plate)
        pictures[name] = (out / f"{name}_thickness_map.png", map_picture(img, *THICKNESS_RANGE_MM))
        change = comparison.change_maps.get(name) if comparison is not None else None
        if change is not None and np.isfinite(change[plate.in_plate]).any():
            img, _ = rasterise(xy, change, plate.in_plate & np.isfinite(change))
            pictures[name + "_change"] = (out / f"{name}_change_map.png",
                                          map_picture(img, *CHANGE_RANGE_MM, diverging=True))
    return pictures


def _region_index(region: np.ndarray, names: list[str]) -> np.ndarray:
    lookup = {n: i + 1 for i, n in enumerate(names)}
    return np.array([lookup.get(r, 0) for r in region], dtype=float)


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _write_text(path: Path, text: str) -> Path:
    return write_text_atomically(path, text)
