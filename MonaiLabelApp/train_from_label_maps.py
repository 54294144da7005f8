"""Train the KneeAI model from a folder of knee label maps (no images needed).

    python MonaiLabelApp/train_from_label_maps.py LABEL_DIR --convention oai_zib --out WORKDIR \
        [--fold K --folds 5] [--variants 4] [--epochs N] [--conf key=value ...]

1. Knees: every label file directly in LABEL_DIR is one knee (any convention the knee schema maps,
   e.g. oai_zib, oai_dess_10class, or ``--convention schema`` for maps already in schema values).
   With ``--fold K`` the knees are split K-fold BY KNEE (WORKDIR/cv_split.json, or ``--split FILE``;
   created once, then reused) and only the training knees of fold K are used; the test knees are
   never read. Without ``--fold`` every knee trains (e.g. a lab's own folder; evaluate elsewhere).
   ``--extra FILE=CONVENTION`` adds a map that trains in every fold (e.g. the only one with menisci).
2. Datastore: WORKDIR/studies in MONAI Label's layout, ``--variants`` synthesised MRIs per knee
   (lib/evaluation/training_datastore.py: reproducible seeds, contrasts, deformations). Label maps are
   first resampled to an isotropic working spacing (``--working-spacing-mm``, default the model's fine
   spacing: the finest the model ever looks at, so nothing it could learn is lost; 0 = the file's own
   grid), which makes synthesis several times faster on the 0.36 mm OAI grids.
3. Training: the server's own training task, in process (``KneeAIApp(...).train(...)``: the code path
   of a lab's server, mixed precision on a GPU when there is one), models in WORKDIR/model. About one
   training knee in five validates, so the Dice that selects and promotes a version is measured on
   knees the model did not train on; each validation knee gives ``--validation-variants`` images
   (default 3: DESS-, PDFS- and T2-like), because one image per knee ranks models 0.01-0.02 apart
   by chance (BENCHMARKS: v0005).
4. Record: WORKDIR/records/<version>.json (and stdout): data, epochs, time, device, validation Dice.

``--conf`` takes the server's options (lib/configs/knee_segmentation.py), e.g. ``--conf fine_spacing=1,1,1``.

``--model knee_refinement`` trains the click network instead (the server's ``knee_refinement`` task, in
WORKDIR/model_refinement) on the same kind of datastore, kept on the label maps' own grids by default
(the network works at the image's native resolution); its validation is the click benchmark's protocol
(mean Dice over simulated clicks 1-5 on the validation knees) and its record holds the random walker's
Dice on the same clicks, which a version must beat to be promoted. ``--train-option KEY=VALUE`` passes
any other option of the training request (e.g. ``clicks_in_the_loop=0.75``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
for path in (APP_DIR, ROOT / "KneeAI"):  # the app's ``lib`` and the shared KneeAILib, from a checkout
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lib.configs.knee_refinement import CONF_OPTIONS as REFINEMENT_CONF_OPTIONS  # noqa: E402
from lib.configs.knee_refinement import REFINEMENT, click_config_from_conf, refinement_model_dir  # noqa: E402
from lib.configs.knee_segmentation import CONF_OPTIONS, model_config_from_conf  # noqa: E402
from lib.evaluation.cross_validation import KneeSplit  # noqa: E402
from lib.evaluation.label_maps import find_label_maps, knee_id, read_knee_labels  # noqa: E402
from lib.evaluation.training_datastore import (  # noqa: E402
    build_datastore,
    pick_validation_knees,
    plan_variants,
    seed_validation_split,
)
from lib.model_store import ModelStore, read_json, write_json_atomically  # noqa: E402
from lib.trainers.options import OptionError, checked_options  # noqa: E402

MODEL = "knee_segmentation"


def parse_train_options(pairs: list[str], known: dict) -> dict[str, str]:
    """``--train-option KEY=VALUE`` pairs; every key must be an option of the training task (its /train
    defaults, ``known``), so a misspelt one stops the run instead of being ignored."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--train-option {pair!r}: expected key=value with key one of {sorted(known)}")
        options[key] = value
    return options


def training_defaults(model: str) -> tuple[dict, dict]:
    """The training request's options and defaults of ``model``'s train task (what its /info shows), and
    the ranges of their values."""
    if model == MODEL:
        from lib.trainers.knee_segmentation import DEFAULTS, RANGES
    else:
        from lib.trainers.knee_refinement import DEFAULTS, RANGES
    return DEFAULTS, RANGES


def training_request(args, train_options: dict) -> dict:
    """The request the server's training task gets, checked as the task checks it: a bad value stops the
    command here, before minutes of synthesis."""
    request = {"model": args.model, "max_epochs": args.epochs, "seed": args.seed, "init": args.init}
    if args.model == MODEL:
        request.update(iterations_per_epoch=args.iterations_per_epoch, val_interval=args.val_interval)
    else:
        request["synthetic_cases"] = args.synthetic_cases
        if args.iterations_per_epoch:
            request["iterations_per_epoch"] = args.iterations_per_epoch
    if args.learning_rate is not None:
        request["learning_rate"] = args.learning_rate
    if args.device:
        request["device"] = args.device
    request.update(train_options)
    try:
        checked_options(request, *training_defaults(args.model))
    except OptionError as error:
        raise SystemExit(str(error)) from None
    return request


def parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or (key not in CONF_OPTIONS and key not in REFINEMENT_CONF_OPTIONS):
            raise SystemExit(f"--conf {pair!r}: expected key=value with key one of "
                             f"{sorted([*CONF_OPTIONS, *REFINEMENT_CONF_OPTIONS])}")
        if key in ("model_dir", "refinement_model_dir"):
            raise SystemExit(f"--conf {key}: the models always live in WORKDIR/model and WORKDIR/model_refinement")
        conf[key] = value
    return conf


def machine_description(device) -> dict:
    import torch

    from lib.precision import describe

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():  # Linux: the model name is more telling than the architecture
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"device": str(device), "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "precision": describe(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def check_workdir_plan(workdir: Path, plan: dict) -> None:
    """One WORKDIR = one set of knees: a model fine-tuned across folds would have seen the test knees."""
    path = workdir / "run_plan.json"
    previous = read_json(path)
    if previous is not None and previous != plan:
        changed = sorted(k for k in set(plan) | set(previous) if plan.get(k) != previous.get(k))
        raise SystemExit(
            f"{workdir} was prepared with other data settings ({', '.join(changed)}): its model may have "
            "trained on knees this run must hold out. Use a new --out for each fold or data set."
        )
    write_json_atomically(path, plan)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label_dir", help="folder of knee label maps (one file per knee)")
    parser.add_argument("--convention", required=True,
                        help="label values of the files: a schema mapping (oai_zib, oai_dess_10class, ...) or 'schema'")
    parser.add_argument("--model", choices=(MODEL, REFINEMENT), default=MODEL,
                        help=f"what to train: the segmentation model (default) or the click network ({REFINEMENT})")
    parser.add_argument("--out", required=True, help="work folder: studies/, model/, records/, cv_split.json")
    parser.add_argument("--fold", type=int, help="train on the training knees of this fold only")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--split", help="split file (default WORKDIR/cv_split.json; created when missing)")
    parser.add_argument("--cv-seed", type=int, default=0, help="seed of a new split (default 0)")
    parser.add_argument("--extra", action="append", default=[], metavar="FILE=CONVENTION",
                        help="a label map that trains in every fold and is never evaluated (e.g. the only map "
                             "with menisci); repeatable")
    parser.add_argument("--variants", type=int, default=4, help="synthesised images per training knee (default 4)")
    parser.add_argument("--validation-knees", type=int, help="knees held out for validation (default ~1 in 5)")
    parser.add_argument("--validation-variants", type=int, default=3,
                        help="synthesised images per validation knee (default 3: one of each contrast family)")
    parser.add_argument("--working-spacing-mm", type=float,
                        help="isotropic spacing the label maps are resampled to before synthesis "
                             "(default: the model's finest fine_spacing; for knee_refinement 0: keep the files' grids)")
    parser.add_argument("--epochs", type=int, default=50, help="training epochs (default 50)")
    parser.add_argument("--iterations-per-epoch", type=int, default=0,
                        help="iterations per epoch (default 0: one pass over the training images, at least 8)")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (default 1)")
    parser.add_argument("--learning-rate", type=float, help="default: the training task's own")
    parser.add_argument("--synthetic-cases", type=int, default=0,
                        help="knee_refinement: procedural phantom knees added to the training images (default 0)")
    parser.add_argument("--init", default="promoted",
                        help="continue from WORKDIR's promoted version (default), from a kept version "
                             "(e.g. v0006, one that was not promoted), or 'scratch'")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthesis and training (default 0)")
    parser.add_argument("--device", help="cpu to force the CPU (default: the GPU when present)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="server --conf option")
    parser.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other option of the training request (e.g. clicks_in_the_loop=0.75 for "
                             "knee_refinement; the task's /info config lists them); applied last")
    args = parser.parse_args(argv)
    if args.variants < 1 or args.validation_variants < 1:
        parser.error("--variants and --validation-variants need at least one image per knee")
    if args.validation_knees is not None and args.validation_knees < 0:
        parser.error("--validation-knees cannot be negative")
    # Without --fold every knee trains: a split given then would be ignored, its test knees trained on.
    if args.fold is None and (args.split or args.folds != 5 or args.cv_seed != 0):
        parser.error("--split, --folds and --cv-seed choose the knees of a fold: give --fold K too "
                     "(without --fold every knee in LABEL_DIR trains)")
    # Options of the other model's task would reach no task: refused rather than dropped without a word.
    if args.model == MODEL and args.synthetic_cases:
        parser.error(f"--synthetic-cases is an option of --model {REFINEMENT}; {MODEL} trains on the datastore only")
    if args.model == REFINEMENT and args.val_interval != 1:
        parser.error(f"--val-interval is an option of --model {MODEL}; {REFINEMENT} validates after every epoch")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    workdir = Path(args.out).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise SystemExit(f"--out {args.out} is a file; give a work folder")
    conf = parse_conf(args.conf)
    request = training_request(args, parse_train_options(args.train_option, training_defaults(args.model)[0]))
    try:  # the app reads both (KneeAIApp): a bad value of either stops the command here, before synthesis
        configs = {MODEL: model_config_from_conf(conf), REFINEMENT: click_config_from_conf(conf)}
    except ValueError as error:
        raise SystemExit(str(error)) from None
    config = configs[args.model]
    if args.working_spacing_mm is not None:
        spacing_mm = args.working_spacing_mm
    else:
        spacing_mm = min(config.fine_spacing) if args.model == MODEL else 0.0

    model_dir = workdir / "model"
    if args.model == MODEL:
        trained_dir = model_dir
    else:  # where the app keeps click-network versions when its model_dir is WORKDIR/model
        trained_dir = Path(refinement_model_dir(str(APP_DIR), {"model_dir": str(model_dir)}))
    try:
        ModelStore(trained_dir).check_start(request["init"])  # --init, or a --train-option init=... over it
    except ValueError as error:
        raise SystemExit(f"--init: {error}") from None
    try:
        label_files = find_label_maps(args.label_dir)
    except (OSError, ValueError) as error:
        raise SystemExit(str(error)) from None
    workdir.mkdir(parents=True, exist_ok=True)  # only once the command knows what it will work on

    # -- which knees -------------------------------------------------------------------------------
    knees = list(label_files)
    split_file = None
    split_knees: set[str] = set()
    test_knees: list[str] = []
    if args.fold is not None:
        split_file = Path(args.split) if args.split else workdir / "cv_split.json"
        try:
            split = KneeSplit.load_or_create(split_file, knees, args.folds, args.cv_seed)
            split.check_fold(args.fold)
        except (OSError, ValueError) as error:
            raise SystemExit(f"--split/--fold: {error}") from None
        test_knees = [k for k in split.test_knees(args.fold) if k in label_files]
        split_knees = set(split.fold_of)
        knees = [k for k in split.train_knees(args.fold) if k in label_files]
    conventions = {k: args.convention for k in knees}
    cross_validated = list(knees)
    for item in args.extra:
        file_name, sep, convention = item.rpartition("=")
        if not sep or not Path(file_name).is_file():
            raise SystemExit(f"--extra {item!r}: expected an existing label file and its convention, FILE=CONVENTION")
        extra = knee_id(file_name)
        if extra in label_files:  # also catches a test knee given again under --extra
            raise SystemExit(f"--extra {file_name}: knee id {extra!r} is already in {args.label_dir}")
        if extra in split_knees:  # a knee of the split whose file is not in LABEL_DIR: maybe a test knee
            raise SystemExit(f"--extra {file_name}: knee id {extra!r} is a knee of the split {split_file}; "
                             "a knee of the split trains or is tested by its fold, never as an extra")
        label_files[extra], conventions[extra] = Path(file_name), convention
        knees.append(extra)
    # Every map that will be read is checked before the work folder is committed to this plan: a bad
    # value found during synthesis left a plan recorded that the corrected command was refused for.
    for knee in knees:
        try:
            read_knee_labels(label_files[knee], conventions[knee])
        except ValueError as error:
            raise SystemExit(f"label map of knee {knee}: {error}") from None
    # Extra maps are there for what they alone label (e.g. menisci): they always train.
    try:
        validation = pick_validation_knees(cross_validated, args.seed, args.validation_knees)
    except ValueError as error:
        raise SystemExit(f"--validation-knees: {error}") from None
    check_workdir_plan(workdir, {
        "label_dir": str(Path(args.label_dir).resolve()), "convention": args.convention, "extra": args.extra,
        "split_file": str(split_file.resolve()) if split_file else None, "fold": args.fold,
        "train_knees": [k for k in knees if k not in validation], "validation_knees": validation,
        "seed": args.seed, "working_spacing_mm": spacing_mm,  # same image names must mean the same images
    })

    # -- datastore ---------------------------------------------------------------------------------
    variants_of = {k: (args.validation_variants if k in validation else args.variants) for k in knees}
    plan = plan_variants(knees, variants_of, args.seed)
    t0 = time.time()
    manifest = build_datastore(workdir / "studies", label_files, conventions, plan, spacing_mm)
    synthesis_s = time.time() - t0
    seed_validation_split(trained_dir / "split.json", plan, set(validation))

    # -- training through the server's task -------------------------------------------------------
    from monailabel.config import settings

    # In process there is no HTTP server: MONAI Label would otherwise POST to 127.0.0.1:8000 to rescore
    # the datastore after training, and keep annotation sessions on disk.
    settings.MONAI_LABEL_AUTO_UPDATE_SCORING = False
    settings.MONAI_LABEL_SESSIONS = False
    from main import KneeAIApp

    app = KneeAIApp(str(APP_DIR), str(workdir / "studies"), {**conf, "model_dir": str(model_dir)})
    t1 = time.time()
    summary = app.train(request)
    training_s = time.time() - t1

    import torch

    from lib.infers.knee_segmentation import pick_device

    version = summary["version"]
    metrics = read_json(trained_dir / "versions" / version / "metrics.json") or {}
    # The configuration the saved weights were trained with: continuing a version keeps its networks'
    # spacings and filters whatever this command's --conf says (lib/trainers), so --conf is no record of it.
    trained_config = ModelStore(trained_dir).load_version(version)["config"]
    record = {
        "command": "train_from_label_maps " + " ".join(argv if argv is not None else sys.argv[1:]),
        "version": version,
        "promoted": summary["promoted"],
        "model": args.model,
        "model_dir": str(trained_dir),
        "label_dir": str(Path(args.label_dir).resolve()),
        "convention": args.convention,
        "extra_training_maps": args.extra,
        "split_file": str(split_file) if split_file else None,
        "fold": args.fold,
        "folds": args.folds if args.fold is not None else None,
        "train_knees": [k for k in knees if k not in validation],
        "validation_knees": validation,
        "test_knees_never_read": test_knees,
        "variants_per_training_knee": args.variants,
        "variants_per_validation_knee": args.validation_variants,
        "images": {"train": sum(1 for m in manifest if m["knee"] not in validation),
                   "validation": sum(1 for m in manifest if m["knee"] in validation)},
        "working_spacing_mm": spacing_mm,
        "model_config": trained_config,
        "started_from": (metrics.get("options") or {}).get("started_from"),  # None: from scratch
        "epochs": summary.get("epochs", args.epochs),
        "iterations_per_epoch": args.iterations_per_epoch,
        "best_epoch": summary["best_epoch"],
        "validation_mean_dice": round(float(summary["mean_dice"]), 4),
        "validated_on_training_data": bool(metrics.get("validated_on_training_data", not validation)),
        "validation_dice": summary.get("val_dice", metrics.get("dice")),
        "validation": metrics.get("validation", "Dice of the segmentation on the validation images"),
        "random_walker_validation": metrics.get("random_walker_baseline"),  # knee_refinement only
        "promotion_bar": metrics.get("promotion_bar"),  # knee_refinement only: what it had to beat
        "validation_history": [{k: h[k] for k in ("epoch", "loss", "mean_dice") if k in h}
                               for h in metrics.get("history", [])],
        "seconds": {"synthesis": round(synthesis_s, 1), "training": round(training_s, 1),
                    "total": round(time.time() - started, 1)},
        "machine": machine_description(pick_device(args.device)),
        "cuda_available": torch.cuda.is_available(),
        "datastore": manifest,
    }
    write_json_atomically(workdir / "records" / f"{version}.json", record)
    printed = {k: v for k, v in record.items() if k != "datastore"}
    print(json.dumps(printed, indent=2))
    return record


if __name__ == "__main__":
    main()
