"""Evaluate a KneeAI model version on held-out knees (synthesised MRIs) and on real MRIs without labels.

    python MonaiLabelApp/evaluate.py --model-dir DIR [--version vNNNN] --labels LABEL_DIR \
        --convention oai_zib [--split split.json --fold K] --seed 1234 --out OUTDIR \
        [--dess-echo1 P --dess-echo2 P] [--roi-margin-mm M --max-roi-mm S]

1. Held-out knees: the label maps in LABEL_DIR (with ``--split/--fold``: only that fold's test knees).
   A knee the model trained or validated on (its metrics.json lists them) is refused: figures are
   only reported on knees the model never saw. Each knee's test MRI is synthesised from its label map
   with a seed hashed from (``--seed``, knee id) and a contrast from ``--contrasts`` (no deformation:
   the expert's label map is the reference as drawn), segmented by the model version through
   ``KneeSegmenter`` (the server's inference pipeline, on the label map's own grid unless
   ``--working-spacing-mm`` is given), and scored per structure: Dice, 95 % Hausdorff distance and
   average symmetric surface distance in mm (lib/evaluation/metrics.py), mean ± sd over knees
   (lib/evaluation/summary.py says which knees count).
2. Real MRIs: with ``--dess-echo1/--dess-echo2`` (two contrasts of one knee on one grid), the
   per-structure Dice between the two predictions (lib/evaluation/agreement.py).
   ``--roi-margin-mm/--max-roi-mm`` run the model with another joint box than its own (the fine pass's
   region; outside it the bones come from the coarse pass): to ask whether a wider box helps before
   training with it. Each case's fine box size is in the JSON.
3. Output: OUTDIR/evaluation.md (tables), OUTDIR/evaluation.json (every figure, per knee too),
   OUTDIR/overlays/*.png (sagittal slices: image | reference | prediction, schema colours).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
for path in (APP_DIR, ROOT / "KneeAI"):  # the app's ``lib`` and the shared KneeAILib, from a checkout
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from KneeAILib.atomic_files import write_text_atomically  # noqa: E402
from KneeAILib.schema import KneeSchema  # noqa: E402

from lib.evaluation.agreement import agreement_markdown, mean_agreement_dice, prediction_agreement  # noqa: E402
from lib.evaluation.cross_validation import KneeSplit  # noqa: E402
from lib.evaluation.label_maps import find_label_maps, read_knee_labels, resample_labels  # noqa: E402
from lib.evaluation.metrics import score_label_maps  # noqa: E402
from lib.evaluation.overlays import write_sagittal_overlay  # noqa: E402
from lib.evaluation.summary import display_names, markdown_table, structure_order, summarise  # noqa: E402
from lib.evaluation.training_datastore import check_finite, seen_knees, stable_seed  # noqa: E402
from lib.infers.knee_segmentation import pick_device  # noqa: E402
from lib.model_store import ModelStore, write_json_atomically  # noqa: E402
from lib.networks import KneeNetworks  # noqa: E402
from lib.segmenter import KneeSegmenter  # noqa: E402
from lib.synthesis import draw_parameters, synthesize_image  # noqa: E402
from lib.synthesis.tissues import CONTRAST_FAMILIES  # noqa: E402
from lib.transforms.image_io import InputError, read_volume, write_atomically  # noqa: E402

SCHEMA_FILE = ROOT / "Resources" / "knee_schema.json"


def load_model(model_dir: Path, version: str | None) -> tuple[str, KneeNetworks, dict]:
    store = ModelStore(model_dir)
    if version is None:
        promoted = store.promoted()
        if promoted is None:
            raise SystemExit(f"{model_dir}: no promoted model version (train one, or give --version)")
        version = promoted["version"]
    try:
        state = store.load_version(version)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return version, KneeNetworks.from_state(state), store.metrics(version) or {}


def with_joint_box(networks: KneeNetworks, margin_mm: float | None, max_mm: float | None) -> dict:
    """Give the model another joint box at inference; returns what changed, {option: (trained, now)}."""
    asked = {"roi_margin_mm": margin_mm, "max_roi_mm": max_mm}
    changed = {k: (getattr(networks.config, k), float(v)) for k, v in asked.items() if v is not None}
    for key, (_, value) in changed.items():
        if value <= 0:
            raise SystemExit(f"--{key.replace('_', '-')} must be > 0 (got {value:g})")
    networks.config = replace(networks.config, **{k: now for k, (_, now) in changed.items()})
    return changed


def box_size_mm(box) -> list[float]:
    return [round(float(e), 1) for e in box.extent]


def held_out_knees(args, label_files: dict[str, Path]) -> list[str]:
    if args.split is None:
        return list(label_files)
    if args.fold is None:
        raise SystemExit("--split needs --fold")
    try:
        split = KneeSplit.load(args.split)
        split.check_fold(args.fold)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--split/--fold: {error}") from None
    knees = split.test_knees(args.fold)
    missing = [k for k in knees if k not in label_files]
    if missing:
        raise SystemExit(f"test knees of fold {args.fold} not found in {args.labels}: {missing}")
    return knees


def mean_over_structures(summary: dict, schema) -> float | None:
    """Mean Dice over the structures scored; a group counts only where its members could not be."""
    members = {g.key: g.members for g in schema.groups}
    values = []
    for key, row in summary.items():
        if row["n"] == 0 or (key in members and any(summary.get(m, {}).get("n") for m in members[key])):
            continue
        values.append(row["dice_mean"])
    return round(float(np.mean(values)), 4) if values else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="model folder (versions/, promoted.json)")
    parser.add_argument("--version", help="model version, e.g. v0003 (default: the promoted one)")
    parser.add_argument("--labels", help="folder of held-out label maps")
    parser.add_argument("--convention", help="label values of those files: a schema mapping (oai_zib, ...) or "
                        "'schema'; required with --labels (OAI-ZIB values are valid schema values too, so a "
                        "default would misread them silently)")
    parser.add_argument("--split", help="cross-validation split file (lib/evaluation/cross_validation.py)")
    parser.add_argument("--fold", type=int, help="evaluate the test knees of this fold")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the synthesised test images (default 1234)")
    parser.add_argument("--contrasts", default="dess,pdfs,t2", help="contrast families of the test images")
    parser.add_argument("--working-spacing-mm", type=float, default=0.0,
                        help="resample label maps to this isotropic spacing first (default 0: their own grid)")
    parser.add_argument("--dess-echo1", help="real MRI, first contrast")
    parser.add_argument("--dess-echo2", help="the same knee and grid, second contrast")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", help="cpu to force the CPU (default: the GPU when present)")
    parser.add_argument("--save-predictions", action="store_true", help="also write the predicted label maps")
    parser.add_argument("--roi-margin-mm", type=float,
                        help="joint box margin at inference, mm (default: the model's own)")
    parser.add_argument("--max-roi-mm", type=float,
                        help="largest joint box per axis at inference, mm (default: the model's own)")
    parser.add_argument("--allow-seen-knees", action="store_true",
                        help="evaluate knees the model trained on anyway (marked in the output; not a test result)")
    args = parser.parse_args(argv)
    if not args.labels and not (args.dess_echo1 and args.dess_echo2):
        parser.error("give --labels, or --dess-echo1 and --dess-echo2, or both")
    if bool(args.dess_echo1) != bool(args.dess_echo2):
        parser.error("--dess-echo1 and --dess-echo2 go together")
    if args.labels and not args.convention:
        parser.error("--labels needs --convention (e.g. oai_zib, or schema)")
    contrasts = [c.strip() for c in args.contrasts.split(",") if c.strip()]
    unknown = [c for c in contrasts if c not in CONTRAST_FAMILIES]
    if not contrasts or unknown:
        parser.error(f"--contrasts: give one or more of {', '.join(CONTRAST_FAMILIES)} (not {unknown or 'none'})")

    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    schema = KneeSchema.load(SCHEMA_FILE)
    names = display_names(schema)
    order = structure_order(schema)
    device = pick_device(args.device)
    version, networks, metrics = load_model(Path(args.model_dir), args.version)
    box_changes = with_joint_box(networks, args.roi_margin_mm, args.max_roi_mm)
    segmenter = KneeSegmenter(networks, schema, device)
    # Everything that can be refused is read before hours of segmentation (20 knees on a CPU).
    label_files, knees, echoes = {}, [], None
    if args.labels:
        try:
            label_files = find_label_maps(args.labels)
        except (OSError, ValueError) as error:
            raise SystemExit(str(error)) from None
        knees = held_out_knees(args, label_files)
        # Read every map once now: a wrong convention or an empty map met at the 15th knee would stop
        # the run after hours of segmentation, before any report is written.
        for knee in knees:
            try:
                read_knee_labels(label_files[knee], args.convention)
            except ValueError as error:
                raise SystemExit(f"label map of knee {knee}: {error}") from None
    if args.dess_echo1:
        try:
            echoes = read_volume(args.dess_echo1), read_volume(args.dess_echo2)
        except InputError as error:
            raise SystemExit(f"--dess-echo1/--dess-echo2: {error}") from None
    report = {
        "model": {"model_dir": str(Path(args.model_dir).resolve()), "version": version,
                  "config": networks.config.to_dict(), "validation_mean_dice": metrics.get("mean_dice"),
                  "joint_box_changed": {k: {"trained": a, "evaluated": b} for k, (a, b) in box_changes.items()}},
        "data": {"labels": args.labels, "convention": args.convention, "split": args.split, "fold": args.fold,
                 "seed": args.seed, "contrasts": contrasts, "working_spacing_mm": args.working_spacing_mm},
        "machine": {"device": str(device), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "python": platform.python_version(), "torch": torch.__version__},
        "overlays": [],
    }
    markdown = [f"# KneeAI evaluation: model {version}", "",
                f"Model folder `{report['model']['model_dir']}`, device {device}."]
    if box_changes:
        markdown += ["", "Joint box at inference NOT the model's own: " + ", ".join(
            f"{k} {b:g} (trained with {a:g})" for k, (a, b) in box_changes.items()) + "."]

    # -- held-out knees, synthesised MRIs ----------------------------------------------------------
    if args.labels:
        trained_on = seen_knees(metrics)
        if trained_on is None:
            if not args.allow_seen_knees:
                raise SystemExit(f"model {version}: its metrics.json does not say which knees it trained on "
                                 f"({metrics.get('damaged', 'no train_cases/validation_cases')}), so no knee can "
                                 "be called held out (--allow-seen-knees for a non-test look)")
            seen = sorted(knees)
        else:
            seen = sorted(set(knees) & trained_on)
            if seen and not args.allow_seen_knees:
                raise SystemExit(f"model {version} trained or validated on {seen}: these are not held out "
                                 "(use another fold's model, or --allow-seen-knees for a non-test look)")
        cases, per_case_scores = [], []
        for knee in knees:
            t0 = time.time()
            try:
                reference = resample_labels(read_knee_labels(label_files[knee], args.convention),
                                            args.working_spacing_mm)
            except ValueError as error:
                raise SystemExit(f"label map of knee {knee}: {error}") from None
            seed = stable_seed("test", args.seed, knee)
            contrast = contrasts[seed % len(contrasts)]
            parameters = draw_parameters(seed, contrast)
            image = check_finite(synthesize_image(reference, seed, contrast), knee)
            t1 = time.time()
            segmentation = segmenter.segment(image)
            prediction = segmentation.labels
            t2 = time.time()
            scores = score_label_maps(prediction, reference, schema=schema)
            per_case_scores.append(scores)
            png = write_sagittal_overlay(out / "overlays" / f"{knee}.png", image, [reference, prediction], schema)
            report["overlays"].append(str(png.relative_to(out)))
            if args.save_predictions:
                write_atomically(prediction, out / "predictions" / f"{knee}.nii.gz")
            cases.append({
                "knee": knee, "seed": seed, "contrast": parameters.contrast, "plane": parameters.plane,
                "slice_thickness_mm": round(parameters.slice_thickness_mm, 2), "size": list(reference.GetSize()),
                "spacing_mm": [round(s, 4) for s in reference.GetSpacing()], "seen_in_training": knee in seen,
                "fine_box_mm": box_size_mm(segmentation.joint_box),
                "seconds": {"synthesis": round(t1 - t0, 1), "segmentation": round(t2 - t1, 1),
                            "scoring": round(time.time() - t2, 1)},
                "scores": {k: s.to_dict() for k, s in scores.items()},
            })
            print(f"{knee}: " + ", ".join(f"{k} {s.dice:.3f}" for k, s in scores.items() if s.ok), flush=True)
        summary = summarise(per_case_scores, order)
        # With --allow-seen-knees the figures are not a test result: say so in the JSON too, not only
        # per case, so a reader of "mean_dice" alone is not misled.
        report["held_out"] = {"knees": knees, "test_result": not seen, "seen_in_training": seen,
                              "cases": cases, "summary": summary,
                              "mean_dice": mean_over_structures(summary, schema)}
        markdown += ["", f"## Held-out knees: synthesised MRIs ({len(knees)} knees)", "",
                     f"Label maps `{args.labels}` ({args.convention})"
                     + (f", fold {args.fold} of `{args.split}`" if args.split else "")
                     + f"; test images synthesised with seed {args.seed} ({', '.join(contrasts)}). "
                     "Mean ± sd over knees; Dice counts a missed structure as 0, distances only where both "
                     "sides have the structure.", "",
                     markdown_table(summary, names), "",
                     f"Mean Dice over structures: {report['held_out']['mean_dice']}"]
        if seen:
            markdown += ["", f"**Not a test result**: the model trained or validated on {seen}."
                         if trained_on is not None else
                         "**Not a test result**: the model's record does not say which knees it trained on."]
        write_report(out, report, markdown)  # kept should the real-MRI part below fail

    # -- real MRIs without labels: echo 1 vs echo 2 -----------------------------------------------
    if echoes:
        first, second = echoes
        t0 = time.time()
        result_first, result_second = segmenter.segment(first), segmenter.segment(second)
        prediction_first, prediction_second = result_first.labels, result_second.labels
        seconds = time.time() - t0
        agreement = prediction_agreement(prediction_first, prediction_second, schema)
        for name, image, prediction in (("echo1", first, prediction_first), ("echo2", second, prediction_second)):
            png = write_sagittal_overlay(out / "overlays" / f"dess_{name}.png", image, [prediction], schema)
            report["overlays"].append(str(png.relative_to(out)))
            if args.save_predictions:
                write_atomically(prediction, out / "predictions" / f"dess_{name}.nii.gz")
        structures = [s.key for s in schema.structures]
        report["echo_agreement"] = {"first": args.dess_echo1, "second": args.dess_echo2, "structures": agreement,
                                    "mean_dice": mean_agreement_dice(agreement, structures),
                                    "seconds_segmentation": round(seconds, 1),
                                    "fine_box_mm": [box_size_mm(result_first.joint_box),
                                                    box_size_mm(result_second.joint_box)]}
        markdown += ["", "## Real MRI without labels: agreement between two contrasts of one knee", "",
                     f"`{args.dess_echo1}` vs `{args.dess_echo2}`: Dice between the two predictions (1 = the "
                     "same segmentation on both contrasts; it does not say the segmentation is right).", "",
                     agreement_markdown(agreement, names), "",
                     f"Mean Dice over structures present in either: {report['echo_agreement']['mean_dice']}"]

    report["seconds"] = round(time.time() - started, 1)
    markdown += ["", "Overlays (sagittal slices; image | reference | prediction, or image | prediction): "
                 + ", ".join(f"`{p}`" for p in report["overlays"]), ""]
    write_report(out, report, markdown)
    print("\n".join(markdown))
    return report


def write_report(out: Path, report: dict, markdown: list[str]) -> None:
    write_json_atomically(out / "evaluation.json", report)
    write_text_atomically(out / "evaluation.md", "\n".join(markdown))


if __name__ == "__main__":
    main()
