"""The whole measurement on a small synthetic knee: frame and side, subregions, denuded bone, two
visits, and every output the CLI writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from label_transforms import mirror_left_right
from phantoms import KneePhantom

from KneeAILib.measurements import LabelMap, compare_visits, measure_knee
from KneeAILib.measurements.cli import main
from KneeAILib.measurements.longitudinal import VisitComparison
from KneeAILib.measurements.outputs import write_all
from KneeAILib.measurements.subregions import SUBREGIONS


@pytest.fixture(scope="module")
def knee():
    labels = LabelMap.from_image(KneePhantom(hole_radius=4.0).image())
    return labels, measure_knee(labels)


def test_frame_side_and_plates(knee):
    labels, m = knee
    assert m.frame.side == "right"
    # the phantom's medial side is patient left (+x), anterior is -y, superior +z
    assert m.frame.medial @ [1, 0, 0] > 0.95
    assert m.frame.anterior @ [0, -1, 0] > 0.95
    assert m.frame.superior @ [0, 0, 1] > 0.95
    # the medial plate (2.0 mm) and the lateral one (2.5 mm) were split from one unsplit label
    assert m.row("medial_tibial_cartilage")["median_thickness_mm"] == pytest.approx(2.0, abs=0.15)
    assert m.row("lateral_tibial_cartilage")["median_thickness_mm"] == pytest.approx(2.5, abs=0.15)
    assert m.row("femoral_cartilage")["median_thickness_mm"] == pytest.approx(2.0, abs=0.15)
    for structure, names in SUBREGIONS.items():
        got = {r["region"] for r in m.rows if r["structure"] == structure}
        assert got == set(names) | {"all"}


def test_regional_volumes_and_areas_add_up(knee):
    _, m = knee
    for structure in SUBREGIONS:
        whole = m.row(structure)
        parts = [r for r in m.rows if r["structure"] == structure and r["region"] != "all"]
        assert sum(r["volume_mm3"] for r in parts) == pytest.approx(whole["volume_mm3"])
        assert sum(r["cab_mm2"] for r in parts) == pytest.approx(whole["cab_mm2"], rel=1e-6)


def test_denuded_hole_is_found_in_the_central_medial_plate(knee):
    _, m = knee
    hole = np.pi * 4.0 ** 2
    assert m.row("medial_tibial_cartilage")["dab_mm2"] == pytest.approx(hole, rel=0.35)
    assert m.row("medial_tibial_cartilage", "cMT")["dab_mm2"] == pytest.approx(hole, rel=0.35)
    assert m.row("lateral_tibial_cartilage")["dab_mm2"] == 0.0
    assert m.row("femoral_cartilage")["dab_mm2"] == 0.0


def test_mirrored_knee_is_a_left_knee_with_the_same_values(knee):
    _, m = knee
    mirrored = LabelMap.from_image(mirror_left_right(KneePhantom(hole_radius=4.0).image()))
    mm = measure_knee(mirrored)
    assert mm.frame.side == "left"
    assert mm.frame.medial @ [-1, 0, 0] > 0.95
    for r in m.rows:
        other = mm.row(r["structure"], r["region"])
        if r["cab_mm2"] > 50:
            assert other["mean_thickness_mm"] == pytest.approx(r["mean_thickness_mm"], rel=0.03), r["region"]
    assert mm.row("medial_tibial_cartilage")["dab_mm2"] > 0 and mm.row("lateral_tibial_cartilage")["dab_mm2"] == 0


def test_two_visits_moved_knee_with_thinner_medial_plate(knee):
    labels, m = knee
    visit2 = LabelMap.from_image(KneePhantom(hole_radius=4.0, medial_thickness=1.5, rotation_deg=(5, -4, 8),
                                             shift_mm=(2.0, -3.0, 1.5)).image())
    m2 = measure_knee(visit2)
    c = compare_visits(labels, m, visit2, m2)
    assert c.row("medial_tibial_cartilage")["change_mm"] == pytest.approx(-0.45, abs=0.12)
    assert c.row("medial_tibial_cartilage")["mapped_mean_change_mm"] == pytest.approx(-0.45, abs=0.12)
    for structure in ("lateral_tibial_cartilage", "femoral_cartilage"):
        assert abs(c.row(structure)["change_mm"]) < 0.05
        assert abs(c.row(structure)["mapped_mean_change_mm"]) < 0.05
    change = c.change_maps["medial_tibial_cartilage"]
    in_plate = m.plates["medial_tibial_cartilage"].in_plate
    assert np.isfinite(change[in_plate]).mean() > 0.9  # the plate's points found their partners
    assert c.registration_error_mm["medial_tibial_cartilage"] < 0.2
    # The femur (condyles + shaft) pins the motion down; compare the alignment with the motion applied.
    # (The phantom's flat tibial plateau and spherical patella can slide along themselves, so they
    # are not checked this way.)
    moved = KneePhantom(rotation_deg=(5, -4, 8), shift_mm=(2.0, -3.0, 1.5))
    plate = m.plates["femoral_cartilage"]
    points = plate.thickness.vertices[plate.in_plate]
    centre = np.array([0.0, -16.0, 18.0])  # the phantom's rotation centre (middle of its box)
    truth = (points - centre) @ moved.rotation().T + centre + np.array(moved.shift_mm)
    found = np.array(c.plate_transforms["femoral_cartilage"]).reshape(4, 4)
    mapped = points @ found[:3, :3].T + found[:3, 3]
    assert np.linalg.norm(mapped - truth, axis=1).mean() < 0.3


def test_cli_writes_every_output(tmp_path):
    first, second = tmp_path / "v1.nii.gz", tmp_path / "v2.nii.gz"
    sitk.WriteImage(KneePhantom().image(), str(first))
    sitk.WriteImage(KneePhantom(medial_thickness=1.5, shift_mm=(1.0, 0.0, 0.0)).image(), str(second))
    out = tmp_path / "out"
    assert main(["measure", str(first), "--compare", str(second), "--out", str(out)]) == 0
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["knee_side"] == "right" and doc["units"]["length"] == "mm"
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert len(rows) == len(doc["regions"]) == 4 + sum(len(v) for v in SUBREGIONS.values())
    change = list(csv.DictReader((out / "thickness_change.csv").open()))
    mt = next(r for r in change if r["structure"] == "medial_tibial_cartilage" and r["region"] == "all")
    assert float(mt["change_mm"]) < -0.3
    for name in ("femur.stl", "tibia.stl", "patella.stl", "femoral_cartilage.stl", "tibial_cartilage.stl",
                 "femoral_cartilage_on_femur.vtp", "medial_tibial_cartilage_on_tibia.ply",
                 "patellar_cartilage_thickness_map.png", "medial_tibial_cartilage_change_map.png"):
        assert (out / name).stat().st_size > 100, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") == 8  # 4 thickness maps + 4 change maps
    assert "cMT" in html and "Change between visits" in html


def test_one_voxel_thin_plate_is_not_reported_as_denuded():
    # 0.5 mm medial plate = one voxel: too thin for the smoothed surfaces (< ~0.7 mm), but not bare bone
    m = measure_knee(LabelMap.from_image(KneePhantom(medial_thickness=0.5).image()))
    medial = m.row("medial_tibial_cartilage")
    assert medial["dab_mm2"] == 0.0
    plate_area = np.pi * 14 * 21
    assert medial["cab_mm2"] + medial["thin_mm2"] > 0.8 * plate_area
    assert m.row("lateral_tibial_cartilage")["thin_mm2"] < 0.1 * m.row("lateral_tibial_cartilage")["cab_mm2"]


def test_a_left_knee_given_as_the_second_visit_is_refused_and_the_report_folder_is_kept(tmp_path, capsys):
    """The second visit was measured as the first one's side, so a left knee given as the follow-up of a
    right one was reported as cartilage change (the plates swapped: +10 % medial, -10 % lateral)."""
    first, left = tmp_path / "v1.nii.gz", tmp_path / "left.nii.gz"
    sitk.WriteImage(KneePhantom().image(), str(first))
    sitk.WriteImage(mirror_left_right(KneePhantom().image()), str(left))
    out = tmp_path / "out"
    assert main(["measure", str(first), "--out", str(out), "--no-meshes"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["measure", str(first), "--compare", str(left), "--out", str(out), "--no-meshes"]) == 2
    assert "different knees (visit 1 right, visit 2 left)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_plate_with_no_point_matched_at_the_second_visit_gets_no_change_map(knee, tmp_path):
    """Drawing the change map of a plate whose points all went unmatched failed (an empty array), after
    the numbers had been written over the last report. Now the pictures are drawn first and such a
    plate simply has no change map."""
    labels, m = knee
    change_maps = {name: np.zeros(len(plate.in_plate)) for name, plate in m.plates.items()}
    change_maps["lateral_tibial_cartilage"][:] = np.nan
    comparison = VisitComparison(rows=[], change_maps=change_maps)
    written = write_all(tmp_path, labels, m, comparison=comparison, meshes=False)
    assert "lateral_tibial_cartilage_change_png" not in written
    assert written["medial_tibial_cartilage_change_png"].is_file() and written["html"].is_file()
