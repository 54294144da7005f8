"""Click-simulation benchmark of interactive correction (issue 5).

    .venv/bin/python Testing/benchmarks/click_benchmark.py [--knees 3] [--label-maps FILE=CONVENTION ...]
        [--refinement-model-dir DIR] [--segmentation-model-dir DIR] [--device cpu|cuda] [--max-clicks 10]
        [--dess PATH | --no-dess] [--dess-clicks N] [--dess-scribbles N] [--during-training] [--out-dir .kneeai/bench]
        [--reach-mm R] [--[no-]keep-connected] [--[no-]follow-click-sign] [--oracle]   (with --no-dess)

1. Accuracy (held-out knees, in process, the server's own refinement code): knees synthesised from
   label maps (procedural phantoms with seeds no training uses, plus any --label-maps, e.g. the real
   OAI label maps in ../shared/data). For each structure, from the automatic result, up to
   --max-clicks clicks, each at the centre of the largest error region (positive in a missed region,
   negative in a false one); Dice after each click and each click's compute time. The automatic
   result is the promoted segmentation model of --segmentation-model-dir; without one, a SIMULATED
   automatic result (every structure corrupted as lib/interactive/simulation.corrupt does), and the
   report says so.
2. Latency on the real DESS (512x512x80), end to end: a real server process, KneeAILib's Update
   (ROI cut, upload of the ROI labels, refinement, answer, merge into one segment), on CPU; or on the
   GPU with --device cuda. The DESS has no labels, so clicks go to random voxels of its central part.
   Then --dess-scribbles scribble Updates (knee_scribbles): a 30 mm stroke with a 3 mm brush on one
   slice, at random places of the central part, foreground and background in turn.
   --during-training: the same while the server trains the click network in its background task
   process (on synthesised knees, into a copy of the model folder), i.e. what an annotator gets
   while a submitted correction retrains the model; set KNEEAI_BACKGROUND_NICENESS=0 for the server
   to compare with a training process at normal priority.
The refinement is the click network promoted in --refinement-model-dir, else the random walker, each
written back as it is on the server; --reach-mm and the two switches compare other write-backs
in process (lib/interactive/refine.Refiner). --oracle replaces the proposer by the truth, written back
the same way: the ceiling that a write-back allows (what a perfect network would reach), not a refiner.
Writes click_benchmark.json and click_benchmark.md under --out-dir; figures go to
BENCHMARKS.md (Interactive).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "MonaiLabelApp", ROOT / "KneeAI", ROOT / "Testing"):
    sys.path.insert(0, str(path))

from KneeAILib.refinement import roi_around  # noqa: E402
from KneeAILib.schema import KneeSchema  # noqa: E402
from lib.interactive.refine import Refiner, network_refiner, walker_refiner  # noqa: E402
from lib.interactive.simulation import corrupt, run_clicks  # noqa: E402
from lib.model_store import ModelStore  # noqa: E402

DESS = ROOT.parent / "shared" / "data" / "mri" / "dess_3t_echo1.nii.gz"
TARGETS = {"bone": (3, 0.95), "cartilage": (5, 0.90), "meniscus": (5, 0.90)}  # kind -> (clicks, Dice)
HELD_OUT_SEED = 50_000  # phantom and synthesis seeds from here on: used by no training


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{os.cpu_count()} CPU cores visible ({cpu}), OMP_NUM_THREADS={threads}, {platform.system()} {platform.release()}"


def refiner(args, device) -> Refiner:
    """The promoted click network of --refinement-model-dir, else the server's random walker; with the
    write-back settings given on the command line instead of its own."""
    chosen = walker_refiner(args.intensity_guard, args.band_mm)
    if args.refinement_model_dir:
        loaded = ModelStore(args.refinement_model_dir).load_promoted()
        if loaded:
            from lib.interactive.network import click_network_from_state

            config, network = click_network_from_state(loaded[1])
            chosen = network_refiner(f"click_network {loaded[0]}", network, config, device)
    overrides = {k: v for k, v in (("radius_mm", args.reach_mm), ("keep_connected", args.keep_connected),
                                   ("follow_click_sign", args.follow_click_sign)) if v is not None}
    chosen = replace(chosen, **overrides)
    if args.intensity_guard:
        chosen = replace(chosen, name=chosen.name + " + intensity guard")
    if args.band_mm:
        chosen = replace(chosen, name=chosen.name + f" + {args.band_mm} mm band")
    return chosen


def oracle(refiner: Refiner) -> Refiner:
    """``refiner``'s write-back around a proposer that knows the truth: ``accuracy`` hands it the
    structure's true mask in place of the image."""
    return replace(refiner, name=f"oracle (the truth as proposal; {refiner.name}'s write-back)",
                   propose=lambda truth, current, fg, bg, spacing_zyx: truth > 0.5)


def write_back(refiner: Refiner) -> str:
    return (f"reach {refiner.radius_mm:g} mm, " + ("changes connected to the click" if refiner.keep_connected
            else "every change within reach") + (", a positive click only adds and a negative one only removes"
                                                 if refiner.follow_click_sign else ""))


def simulated_automatic(labels: np.ndarray, spacing_zyx, rng) -> np.ndarray:
    """Every structure corrupted in turn; false voxels only where the map still has background."""
    start = labels.copy()
    for value in [int(v) for v in np.unique(labels) if 0 < v < 20]:
        truth = labels == value
        wrong = corrupt(truth, spacing_zyx, rng)
        start[truth & ~wrong] = 0
        start[wrong & ~truth & (start == 0)] = value
    return start


def label_map_argument(item: str) -> tuple[Path, str]:
    """``FILE=CONVENTION`` (a schema mapping such as oai_zib or oai_dess_10class, or ``schema``)."""
    from lib.evaluation.label_maps import SCHEMA_CONVENTION

    conventions = [*KneeSchema.load().mappings, SCHEMA_CONVENTION]
    path, sep, convention = item.rpartition("=")
    if not sep or not Path(path).is_file() or convention not in conventions:
        raise argparse.ArgumentTypeError(
            f"{item!r}: expected FILE=CONVENTION, e.g. oai_dess_10class.nrrd=oai_dess_10class "
            f"(conventions: {', '.join(conventions)})")
    return Path(path), convention


def held_out_knees(n: int, label_maps: list[tuple[Path, str]]):
    from lib.evaluation.label_maps import knee_id, read_knee_labels
    from lib.synthesis import make_knee_phantom, synthesize_pair

    for k in range(n):
        labels = make_knee_phantom(HELD_OUT_SEED + k, side="right" if k % 2 == 0 else "left")
        image, labels = synthesize_pair(labels, HELD_OUT_SEED + k)
        yield f"phantom_{HELD_OUT_SEED + k}", image, labels
    for k, (path, convention) in enumerate(label_maps):
        image, labels = synthesize_pair(read_knee_labels(path, convention), HELD_OUT_SEED + 1000 + k)
        yield knee_id(path), image, labels


def refuse_knees_seen_in_training(parser, model_dir: str, label_maps: list[tuple[Path, str]]) -> None:
    """The figures are for knees the model did not train on: a label map of a knee the promoted
    segmentation version trained or was validated on (its metrics.json lists them) is refused, and so is
    a version whose record cannot say."""
    from lib.evaluation.label_maps import knee_id
    from lib.evaluation.training_datastore import seen_knees

    store = ModelStore(model_dir)
    promoted = store.promoted()
    if promoted is None:
        return  # no trained version: the automatic result is simulated from the truth
    seen = seen_knees(store.metrics(promoted["version"]) or {})
    if seen is None:
        parser.error(f"segmentation model {promoted['version']}: its metrics.json does not say which knees it "
                     "trained on, so no --label-maps knee can be called held out")
    overlap = sorted({knee_id(path) for path, _ in label_maps} & seen)
    if overlap:
        parser.error(f"segmentation model {promoted['version']} trained or validated on {overlap}: not held out "
                     "(give label maps of its test knees only, e.g. a fold's cv_split.json test side)")


def automatic_result(image: sitk.Image, labels: np.ndarray, spacing_zyx, segmentation_model_dir, device, rng):
    if segmentation_model_dir:
        loaded = ModelStore(segmentation_model_dir).load_promoted()
        if loaded:
            from lib.networks import KneeNetworks
            from lib.segmenter import KneeSegmenter

            segmenter = KneeSegmenter(KneeNetworks.from_state(loaded[1]), KneeSchema.load(), device)
            return f"segmentation {loaded[0]}", sitk.GetArrayFromImage(segmenter.segment(image).labels)
    return "simulated (corrupted truth)", simulated_automatic(labels, spacing_zyx, rng)


def roi_window(click_ijk, shape_kji, spacing_zyx):
    """(lower, upper) voxel indices (i, j, k; upper exclusive) of the client's ROI around a click, and
    the array slices (k, j, i) that cut it."""
    lo, hi = roi_around(click_ijk, shape_kji, spacing_zyx[::-1])
    return lo, hi, (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))


def where_changes_went(before: np.ndarray, after: np.ndarray, truth: np.ndarray, click, spacing_zyx) -> dict:
    """One update's changed voxels, split into those inside the error region the click was placed in
    (all fixes) and the others ("collateral": fixed or broken). Within the client's ROI around the
    click, which holds every change the server may make."""
    lo, _, window = roi_window(click.ijk, before.shape, spacing_zyx)
    was, now, true = before[window], after[window], truth[window]
    errors = (true & ~was) if click.positive else (was & ~true)
    components, _ = ndimage.label(errors)
    i, j, k = (c - a for c, a in zip(click.ijk, lo))
    region = components == components[k, j, i] if components[k, j, i] else np.zeros(was.shape, bool)
    changed = was != now
    fixed = changed & (now == true)
    return {"in_region_fixed": int(np.count_nonzero(changed & region)),
            "collateral_fixed": int(np.count_nonzero(fixed & ~region)),
            "collateral_broken": int(np.count_nonzero(changed & ~fixed))}


def accuracy(args, schema, device) -> dict:
    refine_structure = oracle(refiner(args, device)) if args.oracle else refiner(args, device)
    per_structure: dict[str, dict] = {}
    start_kind = None
    for case, image, label_image in held_out_knees(args.knees, args.label_maps):
        image_array = sitk.GetArrayFromImage(image).astype(np.float32)
        truth = sitk.GetArrayFromImage(label_image).astype(np.uint8)
        spacing = tuple(image.GetSpacing()[::-1])
        rng = np.random.default_rng(zlib.crc32(case.encode()))  # the same start in every run
        start_kind, start = automatic_result(image, truth, spacing, args.segmentation_model_dir, device, rng)
        for structure in schema.structures:
            structure_truth = truth == structure.value
            if not structure_truth.any():
                continue
            seen = structure_truth.astype(np.float32) if args.oracle else image_array

            def refine(current, fg, bg, last, value=structure.value, seen=seen):
                # What the server gets: the client's ROI around the newest click and the clicks in it.
                lo, hi, window = roi_window(last, current.shape, spacing)

                def local(points):
                    return [tuple(c - a for c, a in zip(p, lo)) for p in points
                            if all(a <= c < b for c, a, b in zip(p, lo, hi))]

                out = current.copy()
                out[window] = refine_structure(seen[window], current[window], value, local(fg), local(bg),
                                               spacing, focus=local([last]), band_mm=args.band_mm)[0]
                return out

            changes = []

            def observe(before, after, click, value=structure.value, changes=changes, structure_truth=structure_truth):
                changes.append(where_changes_went(before == value, after == value, structure_truth, click, spacing))

            trace = run_clicks(start, structure_truth, structure.value, refine, spacing, args.max_clicks,
                               observe=observe)
            print(f"{case} {structure.key}: Dice {[round(d, 3) for d in trace.dice]}", flush=True)
            entry = per_structure.setdefault(structure.key, {"kind": structure.kind, "cases": []})
            entry["cases"].append({"case": case, "dice": trace.dice, "latency_s": trace.latency_s,
                                   "clicks": [{**c, **t} for c, t in zip(trace.clicks, changes)]})
    for entry in per_structure.values():
        # A case that reached the truth before the last click keeps its last Dice for the later clicks.
        padded = [c["dice"] + [c["dice"][-1]] * (args.max_clicks + 1 - len(c["dice"])) for c in entry["cases"]]
        entry["mean_dice_after_clicks"] = [round(float(v), 4) for v in np.mean(padded, axis=0)]
        latencies = [t for c in entry["cases"] for t in c["latency_s"]]
        entry["latency_p50_s"] = round(float(np.percentile(latencies, 50)), 4) if latencies else None
        entry["latency_p95_s"] = round(float(np.percentile(latencies, 95)), 4) if latencies else None
        entry["changed_voxels"] = {key: sum(c[key] for case in entry["cases"] for c in case["clicks"])
                                   for key in ("in_region_fixed", "collateral_fixed", "collateral_broken")}
        clicks, target = TARGETS[entry["kind"]]
        entry["target"] = {"clicks": clicks, "dice": target,
                           "met": bool(entry["mean_dice_after_clicks"][clicks] >= target)}
    return {"refinement": refine_structure.name, "write_back": write_back(refine_structure),
            "max_clicks": args.max_clicks,
            "automatic_result": start_kind, "structures": per_structure}


def dess_latency(args, schema) -> dict:
    """Update round trips through a real server on the real DESS."""
    from kneeai_testing import ServerPool
    from KneeAILib.client import KneeAIClient
    from KneeAILib.refinement import ClickSet, Scribbles, refine_segment, refine_segment_from_scribbles
    from KneeAILib.volume import read_volume_file

    with tempfile.TemporaryDirectory(prefix="kneeai-click-bench-") as tmp:
        tmp = Path(tmp)
        studies = tmp / "studies"
        studies.mkdir()
        os.symlink(args.dess, studies / "dess.nii.gz")  # read only: the refinement never writes to studies
        pool = ServerPool(tmp)
        refinement_dir = tmp / "refinement_model"
        if args.refinement_model_dir:  # a copy: a training run during the benchmark writes versions into it
            shutil.copytree(args.refinement_model_dir, refinement_dir)
        conf = {"refinement_model_dir": str(refinement_dir)}
        training = False
        try:
            # No start-up scoring pass: MONAI Label scores every unlabelled image when it starts, which
            # on 2 cores slowed the first ~10 Updates 2-4x; measured here is a click, not a click
            # competing with that one-off pass.
            env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
            if args.device == "cpu":  # the server picks a GPU when it sees one: a CPU figure must not use it
                env["CUDA_VISIBLE_DEVICES"] = ""
            if "KNEEAI_BACKGROUND_NICENESS" in os.environ:
                env["KNEEAI_BACKGROUND_NICENESS"] = os.environ["KNEEAI_BACKGROUND_NICENESS"]
            url = pool.start(studies, tmp / "model", conf, env=env)
            client = KneeAIClient(url, download_dir=tmp / "downloads")
            if args.during_training:
                training = start_background_training(client)
            image = read_volume_file(args.dess)
            shape = image.array.shape
            rng = np.random.default_rng(0)
            # A current label: a blob of femoral cartilage in the middle (the DESS has no labels).
            value = schema.by_key["femoral_cartilage"].value
            labels = np.zeros(shape, np.uint8)
            kc, jc, ic = (s // 2 for s in shape)
            labels[kc - 10:kc + 10, jc - 60:jc + 60, ic - 60:ic + 60] = value
            volume = image.with_array(labels)
            clicks = ClickSet()
            times, methods, devices = [], set(), set()
            for n in range(args.dess_clicks):
                k, j, i = (int(rng.integers(s // 4, 3 * s // 4)) for s in shape)
                clicks.add("femoral_cartilage", (i, j, k), bool(n % 2 == 0))
                started = time.perf_counter()
                refinement = refine_segment(client, "dess", volume, "femoral_cartilage", clicks, set(), schema)
                times.append(time.perf_counter() - started)
                methods.add(refinement.params.get("method"))
                devices.add(refinement.params.get("device"))
            # Scribble Updates: a 30 mm stroke painted with a 3 mm brush on one slice, foreground and
            # background in turn, at random places (what Segment Editor's Paint makes in one drag).
            scribble_times = []
            half = int(round(15.0 / image.spacing[0]))
            brush = [max(int(round(1.5 / s)), 1) for s in image.spacing]
            for n in range(args.dess_scribbles):
                k, j, i = (int(rng.integers(s // 4, 3 * s // 4)) for s in shape)
                stroke = np.zeros(shape, bool)
                stroke[k, max(j - brush[1], 0):j + brush[1] + 1, max(i - half, 0):i + half + 1] = True
                nothing = np.zeros(shape, bool)
                scribbles = Scribbles(stroke, nothing) if n % 2 == 0 else Scribbles(nothing, stroke)
                started = time.perf_counter()
                refine_segment_from_scribbles(client, "dess", volume, "femoral_cartilage", scribbles, set(), schema)
                scribble_times.append(time.perf_counter() - started)
            still_training = bool(client.train_status()) if training else False
        finally:
            if training:
                client.train_stop()  # before the server goes: its task process would outlive it
            pool.stop_all()
    if args.during_training and not still_training:
        raise RuntimeError("the background training ended before the clicks did: latency not measured under training")
    warm = times[1:]
    return {"image": f"{Path(args.dess).name} {list(shape[::-1])}", "clicks": len(times), "method": sorted(methods),
            "server_device": sorted(devices), "warm_clicks": len(warm),
            "during_training": bool(args.during_training),
            "background_niceness": os.environ.get("KNEEAI_BACKGROUND_NICENESS", "10") if args.during_training else None,
            "first_click_s": round(times[0], 3),
            "p50_s": round(float(np.percentile(warm, 50)), 3), "p95_s": round(float(np.percentile(warm, 95)), 3),
            "max_s": round(float(np.max(warm)), 3), "seconds": [round(t, 3) for t in times],
            "scribble_updates": len(scribble_times),
            "scribble_p50_s": round(float(np.percentile(scribble_times, 50)), 3) if scribble_times else None,
            "scribble_p95_s": round(float(np.percentile(scribble_times, 95)), 3) if scribble_times else None,
            "scribble_seconds": [round(t, 3) for t in scribble_times]}


def start_background_training(client) -> bool:
    """A click-network training run that lasts longer than the benchmark, once its process is busy."""
    client.train_start("knee_refinement", {"synthetic_cases": 2, "max_epochs": 1000, "iterations_per_epoch": 1000,
                                           "init": "scratch", "seed": 0})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.train_status():
            time.sleep(30)  # past its start-up (imports, synthesis of the knees): training steps now
            return True
        time.sleep(1)
    raise RuntimeError("the server did not start the background training within 120 s")


def markdown(result: dict) -> str:
    acc = result.get("accuracy")
    lines = [f"Machine: {result['machine']}; device {result['device']}, {result['precision']}", ""]
    if acc:
        lines += [f"Refinement: {acc['refinement']} ({acc['write_back']}); automatic result: {acc['automatic_result']}; "
                  f"knees: {', '.join(result['knees'])}", "",
                  f"| structure | Dice start | 1 | 2 | 3 | 5 | {acc['max_clicks']} clicks | target | met | "
                  "compute p50 / p95 s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for key, e in acc["structures"].items():
            d = e["mean_dice_after_clicks"]
            pick = [d[n] for n in (0, 1, 2, 3, 5, acc["max_clicks"])]
            t = e["target"]
            lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in pick)
                         + f" | ≥ {t['dice']} @ {t['clicks']} | {'yes' if t['met'] else 'no'} | "
                         f"{e['latency_p50_s']} / {e['latency_p95_s']} |")
        lines += ["", "Where the clicks' changes went (voxels, all cases and clicks): inside the error region "
                  "the click was placed in (fixes) / elsewhere, fixed / elsewhere, broken", "",
                  "| structure | in the clicked region | collateral fixed | collateral broken |", "| --- | --- | --- | --- |"]
        for key, e in acc["structures"].items():
            v = e["changed_voxels"]
            lines.append(f"| {key} | {v['in_region_fixed']} | {v['collateral_fixed']} | {v['collateral_broken']} |")
    dess = result.get("dess_latency")
    if dess:
        during = (f", while the server trains in the background (task niceness {dess['background_niceness']})"
                  if dess.get("during_training") else "")
        lines += ["", f"Real DESS ({dess['image']}), Update through a real server ({', '.join(map(str, dess['method']))}){during}: "
                  f"{dess['clicks']} clicks, first {dess['first_click_s']} s (reads the image), then "
                  f"(n = {dess['warm_clicks']}) p50 {dess['p50_s']} s, p95 {dess['p95_s']} s, max {dess['max_s']} s; "
                  f"server device {', '.join(map(str, dess['server_device']))}."]
        if dess.get("scribble_updates"):
            lines += ["", "Scribble Updates (a 30 mm stroke, 3 mm brush, foreground and background in turn): "
                      f"n = {dess['scribble_updates']}, p50 {dess['scribble_p50_s']} s, "
                      f"p95 {dess['scribble_p95_s']} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knees", type=int, default=3, help="held-out synthesised phantom knees")
    parser.add_argument("--label-maps", nargs="*", default=[], type=label_map_argument, metavar="FILE=CONVENTION",
                        help="label maps to synthesise held-out knees from, each with its label convention")
    parser.add_argument("--refinement-model-dir")
    parser.add_argument("--segmentation-model-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-clicks", type=int, default=10, help="clicks per structure (at least 5: the targets)")
    parser.add_argument("--intensity-guard", action="store_true", help="random walker with the intensity guard")
    parser.add_argument("--band-mm", type=float, default=0.0, help="also free the boundary band (mm) in the ROI")
    # Write-back settings (default: the click network's own, or the walker's): for comparing them.
    parser.add_argument("--reach-mm", type=float, help="how far from the click a change may reach")
    parser.add_argument("--keep-connected", action=argparse.BooleanOptionalAction,
                        help="keep only the changes connected to the click")
    parser.add_argument("--follow-click-sign", action=argparse.BooleanOptionalAction,
                        help="a positive click may only add voxels, a negative one only remove them")
    parser.add_argument("--oracle", action="store_true",
                        help="the truth as the proposal, written back as the refiner would: the write-back's ceiling")
    parser.add_argument("--dess", default=str(DESS))
    parser.add_argument("--no-dess", action="store_true")
    parser.add_argument("--dess-scribbles", type=int, default=11,
                        help="scribble Updates timed on the real DESS after the clicks (0: none)")
    parser.add_argument("--dess-clicks", type=int, default=21,
                        help="Updates on the DESS (at least 3: the first, which reads the image, is reported apart)")
    parser.add_argument("--during-training", action="store_true",
                        help="measure the DESS latency while the server trains the click network")
    parser.add_argument("--out-dir", default=str(ROOT / ".kneeai" / "bench"))
    args = parser.parse_args(argv)
    from KneeAILib.refinement import REACH_MM

    if args.max_clicks < max(clicks for clicks, _ in TARGETS.values()):
        parser.error(f"--max-clicks must be at least {max(clicks for clicks, _ in TARGETS.values())} (the targets' clicks)")
    if args.dess_scribbles < 0:
        parser.error("--dess-scribbles must be 0 or more")
    if args.dess_clicks < 3:
        parser.error("--dess-clicks must be at least 3 (the first Update is reported apart; p50/p95 need the rest)")
    if args.reach_mm is not None and not 0 < args.reach_mm <= REACH_MM:
        parser.error(f"--reach-mm must be in (0, {REACH_MM:g}] mm: the client sends the region within {REACH_MM:g} mm "
                     "of a click, so a farther reach would be cut there")
    args.dess = str(Path(args.dess).resolve())  # linked into the server's studies folder: absolute
    if not args.no_dess and not Path(args.dess).is_file():
        parser.error(f"--dess {args.dess} is not a file (or give --no-dess to skip the latency part)")
    if args.label_maps and args.segmentation_model_dir:
        refuse_knees_seen_in_training(parser, args.segmentation_model_dir, args.label_maps)
    overrides = (args.reach_mm, args.keep_connected, args.follow_click_sign)
    if (any(v is not None for v in overrides) or args.oracle) and not args.no_dess:
        parser.error("--reach-mm/--keep-connected/--follow-click-sign/--oracle change the in-process accuracy run only "
                     "(the server refines with its network's own settings): add --no-dess")

    import torch

    from lib.precision import describe

    device = torch.device(args.device)
    schema = KneeSchema.load()
    result = {"machine": machine(), "device": str(device), "precision": describe(device)["inference"],
              "knees": [f"phantom_{HELD_OUT_SEED + k}" for k in range(args.knees)] + [f"{p.name} ({c})" for p, c in args.label_maps]}
    if args.knees or args.label_maps:
        result["accuracy"] = accuracy(args, schema, device)
    if not args.no_dess:
        result["dess_latency"] = dess_latency(args, schema)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "click_benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "click_benchmark.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
