"""Benchmark of the knee measurements: phantom accuracy, robustness and regional means on the real
OAI-ZIB label maps, run times, and an offscreen VTK picture of one thickness map.

    .venv/bin/python Testing/benchmarks/measurements_benchmark.py [--knees N] [--robustness-knees M]
        [--revoxelise linear|nearest] [--robustness-only]

--revoxelise picks how the finer/coarser variants re-voxelise the label map: "linear" (default;
label-aware, each label's indicator linearly interpolated then argmax) or "nearest" (nearest
neighbour, the earlier method, kept for comparison). --robustness-only runs section 2 alone on the
first M knees and writes measurements_robustness_<revoxelise>.json instead of the full JSON.

Writes Testing/benchmarks/output/measurements_benchmark.json (numbers only) and
measurements_thickness_<id>.png, and prints the Markdown tables of BENCHMARKS.md (Measurements).
Needs ../shared/data (skips the real-data parts without it). VTK is used here only, for the picture.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "KneeAI"), str(ROOT / "Testing" / "measurements")]

from label_transforms import (  # noqa: E402
    mirror_left_right,
    resample_labels_linear,
    resample_to_spacing,
    rotate_grid,
)
from phantoms import FEMORAL_CARTILAGE, FEMUR, ShellPhantom  # noqa: E402

from KneeAILib.measurements import LabelMap, measure_knee, plate_thickness  # noqa: E402

OAI_ZIB = ROOT.parent / "shared" / "data" / "labels" / "oai_zib"
OUT = ROOT / "Testing" / "benchmarks" / "output"
PHANTOMS = [
    ShellPhantom("sphere", 20.0, 2.0),
    ShellPhantom("sphere", 20.0, 2.0, rotation_deg=(30, -20, 50)),
    ShellPhantom("sphere", 15.0, 1.2, rotation_deg=(20, 10, 35)),
    ShellPhantom("sphere", 25.0, 3.0, spacing=(0.7, 0.36, 0.36), rotation_deg=(0, 0, 45)),
    ShellPhantom("sphere", 18.0, 1.5, spacing=(0.3, 0.3, 0.6), rotation_deg=(10, 40, 0)),
    ShellPhantom("cylinder", 15.0, 2.5, rotation_deg=(5, 30, 0)),
    ShellPhantom("cylinder", 20.0, 2.0, rotation_deg=(25, 15, 40)),
]
REVOXELISE = {"linear": resample_labels_linear, "nearest": resample_to_spacing}


def variants(revoxelise: str) -> dict:
    resample = REVOXELISE[revoxelise]
    return {
        "rotated grid (15, -10, 25 deg)": lambda img: rotate_grid(img, (15, -10, 25)),
        f"finer voxels 0.6x0.3x0.3 mm ({revoxelise})": lambda img: resample(img, (0.6, 0.3, 0.3)),
        f"coarser voxels 0.8x0.42x0.42 mm ({revoxelise})": lambda img: resample(img, (0.8, 0.42, 0.42)),
        "mirrored (left knee)": mirror_left_right,
    }


MIN_AREA_MM2 = 50.0


def phantom_accuracy() -> list[dict]:
    rows = []
    # One untimed run first: the first call pays one-off costs (imports, caches), not measuring.
    plate_thickness(LabelMap.from_image(PHANTOMS[0].image()), FEMORAL_CARTILAGE, FEMUR)
    for p in PHANTOMS:
        labels = LabelMap.from_image(p.image())
        start = time.perf_counter()
        plate = plate_thickness(labels, FEMORAL_CARTILAGE, FEMUR)
        seconds = time.perf_counter() - start
        ok = p.evaluable(plate.vertices)
        err = plate.thickness[ok] - p.thickness
        rows.append({"phantom": f"{p.kind} r={p.radius:g} t={p.thickness:g} mm", "spacing_mm": list(p.spacing),
                     "rotation_deg": list(p.rotation_deg), "points": int(ok.sum()),
                     "unmeasured": int(np.isnan(err).sum()), "mean_error_mm": float(np.nanmean(err)),
                     "p95_abs_error_mm": float(np.nanpercentile(np.abs(err), 95)),
                     "max_abs_error_mm": float(np.nanmax(np.abs(err))), "seconds": seconds})
    return rows


def real_knees(paths: list[Path], robustness: int, revoxelise: str = "linear") -> tuple[list[dict], list[dict]]:
    knees, robust = [], []
    for n, path in enumerate(paths):
        image = sitk.ReadImage(str(path))
        start = time.perf_counter()
        m = measure_knee(LabelMap.from_image(image, "oai_zib"))
        seconds = time.perf_counter() - start
        knees.append({"id": path.name.split(".")[0], "side": m.frame.side, "side_evidence": m.frame.side_evidence,
                      "seconds": seconds, "rows": m.rows})
        print(f"{path.name}: {m.frame.side} {seconds:.1f} s", flush=True)
        if n < robustness:
            for name, make in variants(revoxelise).items():
                other = measure_knee(LabelMap.from_image(make(image), "oai_zib"))
                changes = {}
                for r in m.rows:
                    if r["cab_mm2"] >= MIN_AREA_MM2:
                        o = other.row(r["structure"], r["region"])
                        changes[f"{r['structure']}/{r['region']}"] = 100 * (o["mean_thickness_mm"] / r["mean_thickness_mm"] - 1)
                # A region the variant left unmeasured (NaN) is listed, not lost inside max() and median().
                unmeasured = sorted(k for k, v in changes.items() if not np.isfinite(v))
                changes = {k: v for k, v in changes.items() if np.isfinite(v)}
                worst = max(changes, key=lambda k: abs(changes[k]))
                robust.append({"id": path.name.split(".")[0], "variant": name, "side": other.frame.side,
                               "max_abs_change_percent": abs(changes[worst]), "worst_region": worst,
                               "median_abs_change_percent": float(np.median(np.abs(list(changes.values())))),
                               "regions_over_3_percent": int(sum(abs(v) > 3 for v in changes.values())),
                               "regions_unmeasured": unmeasured})
                print(f"  {name}: max {abs(changes[worst]):.2f} % ({worst})"
                      + (f"; unmeasured: {unmeasured}" if unmeasured else ""), flush=True)
    return knees, robust


def regional_summary(knees: list[dict]) -> list[dict]:
    table: dict[tuple[str, str], list[float]] = {}
    for k in knees:
        for r in k["rows"]:
            if np.isfinite(r["mean_thickness_tab_mm"]):
                table.setdefault((r["structure"], r["region"]), []).append(r["mean_thickness_tab_mm"])
    return [{"structure": s, "region": g, "n": len(v), "mean_mm": float(np.mean(v)), "sd_mm": float(np.std(v, ddof=1))
             if len(v) > 1 else float("nan")} for (s, g), v in table.items()]


def render_thickness(path: Path, png: Path) -> None:
    """Offscreen VTK picture, three views: femur from below, tibia from above, patella from behind.

    Each shows the bone surface measured under the plate (the same surface the thickness lives on),
    coloured by thickness where covered and in bone colour elsewhere, with one colour bar in mm.
    """
    import vtk
    from vtk.util import numpy_support

    from KneeAILib.measurements.thickness_map_image import colormap

    labels = LabelMap.read(path, "oai_zib")
    m = measure_knee(labels)

    def polydata(verts, tris, scalars):
        poly = vtk.vtkPolyData()
        pts = vtk.vtkPoints()
        pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(verts, dtype=np.float32), deep=True))
        poly.SetPoints(pts)
        cells = np.hstack([np.full((len(tris), 1), 3), tris]).astype(np.int64).ravel()
        arr = vtk.vtkCellArray()
        arr.ImportLegacyFormat(numpy_support.numpy_to_vtkIdTypeArray(cells, deep=True))
        poly.SetPolys(arr)
        s = numpy_support.numpy_to_vtk(np.ascontiguousarray(scalars, dtype=np.float32), deep=True)
        s.SetName("thickness_mm")
        poly.GetPointData().SetScalars(s)
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(poly)
        normals.Update()
        return normals.GetOutput()

    lut = vtk.vtkLookupTable()
    lut.SetNumberOfTableValues(256)
    lut.SetRange(0.0, 4.0)
    for i, (r, g, b) in enumerate(colormap(np.linspace(0, 1, 256), 0, 1) / 255.0):
        lut.SetTableValue(i, r, g, b, 1.0)
    lut.SetBelowRangeColor(0.93, 0.88, 0.75, 1.0)  # bare bone
    lut.UseBelowRangeColorOn()
    lut.Build()

    f = m.frame
    views = [  # plates, looking direction (from eye to bone), view-up, viewport
        (("femoral_cartilage",), f.superior, f.anterior, (0.0, 0.0, 0.33, 1.0), "femur from below"),
        (("medial_tibial_cartilage", "lateral_tibial_cartilage"), -f.superior, f.anterior, (0.33, 0.0, 0.66, 1.0),
         "tibia from above"),
        (("patellar_cartilage",), f.anterior, f.superior, (0.66, 0.0, 0.9, 1.0), "patella from behind"),
    ]
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(1100, 420)
    for plates, look, up, viewport, title in views:
        renderer = vtk.vtkRenderer()
        renderer.SetViewport(*viewport)
        renderer.SetBackground(1, 1, 1)
        centre = []
        for name in plates:
            plate = m.plates[name]
            t = plate.thickness
            values = np.where(t.covered, t.thickness, -1.0)
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputData(polydata(t.vertices, t.triangles, values))
            mapper.SetLookupTable(lut)
            mapper.SetScalarRange(0.0, 4.0)
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            renderer.AddActor(actor)
            centre.append(t.vertices[plate.in_plate].mean(axis=0))
        c = np.mean(centre, axis=0)
        camera = renderer.GetActiveCamera()
        camera.SetFocalPoint(*c)
        camera.SetPosition(*(c - 250.0 * look))
        camera.SetViewUp(*up)
        renderer.ResetCamera()
        camera.Zoom(0.95)
        text = vtk.vtkTextActor()
        text.SetInput(title)
        text.GetTextProperty().SetColor(0, 0, 0)
        text.GetTextProperty().SetFontSize(16)
        text.SetPosition(10, 10)
        renderer.AddViewProp(text)
        window.AddRenderer(renderer)
    legend = vtk.vtkRenderer()  # the colour bar in its own strip, so it covers no plate
    legend.SetViewport(0.9, 0.0, 1.0, 1.0)
    legend.SetBackground(1, 1, 1)
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("mm")
    bar.SetNumberOfLabels(5)
    bar.SetLabelFormat("%.1f")
    bar.SetPosition(0.1, 0.1)
    bar.SetWidth(0.8)
    bar.SetHeight(0.8)
    for prop in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        prop.SetColor(0, 0, 0)
    legend.AddViewProp(bar)
    window.AddRenderer(legend)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(png))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def print_robustness(robust: list[dict]) -> None:
    print("\n| knee | variant | max abs change (%) | region | median (%) | regions > 3 % | side |")
    print("|---|---|---|---|---|---|---|")
    for r in robust:
        print(f"| {r['id']} | {r['variant']} | {r['max_abs_change_percent']:.2f} | {r['worst_region']} | "
              f"{r['median_abs_change_percent']:.2f} | {r['regions_over_3_percent']} | {r['side']} |")


def robustness_only(args, result: dict) -> int:
    """Section 2 alone (about 5 measurements per knee), so the re-voxelisation can be compared quickly."""
    paths = sorted(OAI_ZIB.glob("oai_zib_*.nii.gz"))[:args.robustness_knees]
    if not paths:
        print(f"no OAI-ZIB label maps at {OAI_ZIB}")
        return 1
    _, robust = real_knees(paths, len(paths), args.revoxelise)
    result["robustness"] = robust
    print_robustness(robust)
    (OUT / f"measurements_robustness_{args.revoxelise}.json").write_text(json.dumps(result, indent=1, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knees", type=int, default=20)
    parser.add_argument("--robustness-knees", type=int, default=5)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--revoxelise", choices=sorted(REVOXELISE), default="linear")
    parser.add_argument("--robustness-only", action="store_true")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "python": platform.python_version(), "numpy": np.__version__, "revoxelise": args.revoxelise}
    if args.robustness_only:
        return robustness_only(args, result)
    result["phantoms"] = phantom_accuracy()
    print("| phantom | voxel (mm) | rotation (deg) | points | mean error (mm) | p95 abs error (mm) | max (mm) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["phantoms"]:
        print(f"| {r['phantom']} | {'x'.join(f'{s:g}' for s in r['spacing_mm'])} | {tuple(r['rotation_deg'])} | "
              f"{r['points']} | {r['mean_error_mm']:+.3f} | {r['p95_abs_error_mm']:.3f} | {r['max_abs_error_mm']:.3f} | "
              f"{r['seconds']:.1f} |")
    paths = sorted(OAI_ZIB.glob("oai_zib_*.nii.gz"))[:args.knees]
    if paths:
        knees, robust = real_knees(paths, args.robustness_knees, args.revoxelise)
        result["knees"] = [{k: v for k, v in kn.items() if k != "rows"} | {"regions": kn["rows"]} for kn in knees]
        result["robustness"] = robust
        result["regional_summary"] = regional_summary(knees)
        times = [k["seconds"] for k in knees]
        result["seconds_per_knee"] = {"median": float(np.median(times)), "mean": float(np.mean(times)),
                                      "max": float(np.max(times))}
        print(f"\nper knee: median {np.median(times):.1f} s, mean {np.mean(times):.1f} s, max {np.max(times):.1f} s")
        print_robustness(robust)
        print("\n| structure | region | n | mean ThCtAB (mm) | SD (mm) |")
        print("|---|---|---|---|---|")
        for r in result["regional_summary"]:
            print(f"| {r['structure']} | {r['region']} | {r['n']} | {r['mean_mm']:.2f} | {r['sd_mm']:.2f} |")
        if not args.skip_render:
            png = OUT / f"measurements_thickness_{paths[0].name.split('.')[0]}.png"
            render_thickness(paths[0], png)
            print(f"\npicture: {png} ({png.stat().st_size // 1024} KB)")
    (OUT / "measurements_benchmark.json").write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
