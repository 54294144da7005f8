"""``kneeai``: the KneeAI server from the command line.

    kneeai [--server URL] [--token T] info
    kneeai segment IMAGE -o OUT.seg.nrrd|OUT.nii.gz [--echo N] [--allow-upload] [--force]
    kneeai next [--strategy random|knee_uncertainty]
    kneeai submit IMAGE_ID LABEL
    kneeai train [--epochs N]
    kneeai status
    kneeai measure LABELMAP ...            (when the measurements package is installed)

IMAGE is a local file or DICOM folder (sent as voxels and geometry only, after you consented once per
server with --allow-upload; the server keeps no copy) or else the id of an image on the server. An IMAGE
that looks like a path but does not exist is an error, never sent as an id. OUT is never replaced
unless --force is given, and never when it is IMAGE itself.
Exit status: 0 done, 1 the server refused or failed (its message is printed), 2 bad input or usage,
3 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .annotator import fetch_server_info, require_image_grid
from .client import MODEL, BadResponse, KneeAIClient, ServerError, ServerUnreachable
from .schema import KneeSchema, SchemaError
from .seg_nrrd import read_label_file, write_seg_nrrd
from .training import fetch_training_progress
from .upload import ConsentRequired, JsonConsentStore, default_consent_file
from .volume import VolumeError, read_dicom_echoes, read_volume_file, write_volume_atomically

EXIT_OK, EXIT_SERVER_ERROR, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_SERVER = "http://127.0.0.1:8000"
LABEL_OUTPUTS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")
# An IMAGE argument ending like this is meant as a local file, never as a server image id.
LOCAL_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".ima")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneeai", description="KneeAI knee MRI segmentation server client",
                                     epilog="Exit status: 0 done, 1 server error, 2 bad input, 3 server unreachable.")
    parser.add_argument("--server", default=os.environ.get("KNEEAI_SERVER", DEFAULT_SERVER),
                        help=f"server URL (default: $KNEEAI_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--token", default=os.environ.get("KNEEAI_TOKEN"), help="bearer token (default: $KNEEAI_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("info", help="server, model version, structures and training state")
    p.add_argument("--json", action="store_true", help="print the server's /info as JSON")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("segment", help="segment a knee MRI (local file/DICOM folder or server image id)")
    p.add_argument("image", help="a NIfTI/NRRD file, a DICOM folder, or an image id on the server")
    p.add_argument("-o", "--output", required=True, type=Path, help="OUT.seg.nrrd (Slicer segmentation) or OUT.nii.gz")
    p.add_argument("--echo", type=int, default=1, help="echo to use from a multi-echo DICOM series (1 = shortest TE)")
    p.add_argument("--allow-upload", action="store_true",
                   help="consent (remembered for this server) to send the image's voxels and geometry")
    p.add_argument("--force", action="store_true", help="replace OUT when it exists (never the input image)")
    p.add_argument("--model", default=MODEL)
    p.set_defaults(func=cmd_segment)

    p = commands.add_parser("next", help="the id of the case the server wants labelled next")
    p.add_argument("--strategy", default="random", help="active learning strategy (random, knee_uncertainty)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_next)

    p = commands.add_parser("submit", help="store a finished label for a server image")
    p.add_argument("image_id")
    p.add_argument("label", type=Path, help="label map (.nii.gz/.nrrd with schema values) or a Slicer .seg.nrrd")
    p.add_argument("--tag", default="final")
    p.set_defaults(func=cmd_submit)

    p = commands.add_parser("train", help="start training a new model version")
    p.add_argument("--epochs", type=int, help="number of epochs (server default otherwise)")
    p.add_argument("--model", default=MODEL)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("status", help="training progress and the model version in use")
    p.add_argument("--model", default=MODEL)
    p.set_defaults(func=cmd_status)

    try:  # the measurements package is another part of KneeAILib, built separately
        from .measurements.cli import add_subcommands as add_measure
    except ImportError:
        add_measure = None
    if add_measure:
        add_measure(commands)
    return parser


def _client(args) -> KneeAIClient:
    return KneeAIClient(args.server, token=args.token)


def _schema(client: KneeAIClient) -> KneeSchema:
    return fetch_server_info(client)[1]


def cmd_info(args) -> int:
    info = _client(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"{info.get('name')} {info.get('version')} at {args.server}")
    print(f"Model version: {info.get('model_version', 'unknown')}")
    print(f"Models: {', '.join(info.get('models', {}))}; strategies: {', '.join(info.get('strategies', {}))}")
    schema = KneeSchema.from_dict(info["knee_schema"]) if "knee_schema" in info else None
    for s in schema.structures if schema else []:
        print(f"  {s.value:3d} {s.name}")
    return EXIT_OK


def cmd_segment(args) -> int:
    suffix = next((s for s in LABEL_OUTPUTS if args.output.name.endswith(s)), None)
    if suffix is None:
        raise VolumeError(f"Output must end with one of {', '.join(LABEL_OUTPUTS)}: {args.output}")
    local = Path(args.image)
    _check_segment_paths(local, args.output, args.force)
    client = _client(args)
    schema = _schema(client)
    volume = None
    if local.exists():
        consent = JsonConsentStore(default_consent_file())
        if args.allow_upload:
            consent.set_consent(client.server_url, True)
        if not consent.has_consent(client.server_url):
            raise ConsentRequired(client.server_url)
        volume = _local_volume(local, args.echo)
        with tempfile.TemporaryDirectory(prefix="kneeai-") as tmp:
            # A fresh NIfTI from voxels and geometry: nothing of the source's header goes out.
            image_file = write_volume_atomically(volume, Path(tmp) / "image.nii.gz")
            result = client.infer(image_file=image_file, model=args.model)
    else:
        result = client.infer(image_id=args.image, model=args.model)
    try:
        labels = read_volume_file(result.label_path)
    finally:
        result.label_path.unlink(missing_ok=True)
    if volume is not None:
        require_image_grid(labels, volume, str(local))
    schema.check_label_values(labels.array)
    try:
        if suffix == ".seg.nrrd":
            write_seg_nrrd(labels, schema, args.output)
        else:
            write_volume_atomically(labels.with_array(labels.array.astype("uint8")), args.output)
    except OSError as e:
        raise VolumeError(f"Cannot write {args.output}: {e.strerror or e}") from e
    print(f"Wrote {args.output} (model {result.params.get('model_version', '?')})")
    return EXIT_OK


def _check_segment_paths(image: Path, output: Path, force: bool) -> None:
    """Refuses, before anything is sent: a path-like IMAGE that does not exist (a typo would otherwise
    send a patient's path to the server as an image id), an existing OUT without --force, and OUT = IMAGE."""
    name = str(image)
    looks_like_path = any(sep and sep in name for sep in (os.sep, os.altsep)) or \
        name.lower().endswith(LOCAL_IMAGE_SUFFIXES)
    if looks_like_path and not image.exists():
        raise VolumeError(f"{image}: no such file or folder")
    if output.exists() or output.is_symlink():
        if image.exists() and output.exists() and os.path.samefile(image, output):
            raise VolumeError(f"The output {output} is the input image itself; choose another output name")
        if not force:
            raise VolumeError(f"{output} exists; pass --force to replace it")


def _local_volume(path: Path, echo: int):
    if path.is_dir():
        echoes = read_dicom_echoes(path)
        if not 1 <= echo <= len(echoes):
            raise VolumeError(f"{path}: echo {echo} requested, the series has {len(echoes)} echo(es)")
        return echoes[echo - 1][1]
    return read_volume_file(path)


def cmd_next(args) -> int:
    sample = _client(args).next_sample(args.strategy)
    if sample is None:
        print("No case left to label.", file=sys.stderr)
        return EXIT_OK
    print(json.dumps(sample, indent=2) if args.json else sample["id"])
    return EXIT_OK


def cmd_submit(args) -> int:
    client = _client(args)
    labels = read_label_file(args.label, _schema(client))
    with tempfile.TemporaryDirectory(prefix="kneeai-") as tmp:
        label_file = write_volume_atomically(labels, Path(tmp) / "label.nii.gz")
        client.save_label(args.image_id, label_file, tag=args.tag)
    print(f"Saved label '{args.tag}' for {args.image_id}")
    return EXIT_OK


def cmd_train(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise VolumeError("--epochs must be at least 1")
    params = {"max_epochs": args.epochs} if args.epochs else {}
    task = _client(args).train_start(args.model, params)
    print(f"Training started: task {task.get('id', '?')} ({task.get('status', '?')})")
    return EXIT_OK


def cmd_status(args) -> int:
    print("\n".join(fetch_training_progress(_client(args), args.model).lines()))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ServerUnreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ServerError as e:
        print(f"error: the server refused: {e.detail} (HTTP {e.status_code})", file=sys.stderr)
        return EXIT_SERVER_ERROR
    except BadResponse as e:
        print(f"error: unexpected answer from the server: {e}", file=sys.stderr)
        return EXIT_SERVER_ERROR
    except ConsentRequired as e:
        print(f"error: {e} Run again with --allow-upload to agree.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except _input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean 'this input cannot be used' (VolumeError and SchemaError are ValueErrors)."""
    errors: tuple[type[BaseException], ...] = (VolumeError, SchemaError, FileNotFoundError, ValueError)
    try:
        from .measurements.errors import MeasurementError
    except ImportError:
        return errors
    return errors + (MeasurementError,)


if __name__ == "__main__":
    sys.exit(main())
