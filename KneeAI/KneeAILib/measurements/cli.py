"""Command line: ``measure LABELMAP [--convention oai_zib] [--out DIR] [--compare LABELMAP2] [--side]``.

Wire it as a subcommand with ``add_subcommands(subparsers)`` or run ``python -m
KneeAILib.measurements.cli measure ...``. Exit status 0 on success, 2 for inputs that cannot be
measured (the message says why), so scripts can tell bad inputs from crashes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import MeasurementError
from .labelmap import SCHEMA_CONVENTION, LabelMap
from .outputs import measure_and_write


def add_subcommands(subparsers) -> None:
    p = subparsers.add_parser("measure", help="cartilage thickness, regional values, meshes and a report")
    p.add_argument("labelmap", type=Path, help="knee label map (NIfTI, NRRD, ... anything SimpleITK reads)")
    p.add_argument("--convention", default=SCHEMA_CONVENTION,
                   help="label values of the map: 'schema' (KneeAI values) or a mapping name, e.g. oai_zib")
    p.add_argument("--out", type=Path, default=Path("kneeai_measurements"), help="output folder")
    p.add_argument("--compare", type=Path, help="label map of a second visit of the same knee")
    p.add_argument("--side", choices=["right", "left"], help="knee side (default: detected from the anatomy)")
    p.add_argument("--no-meshes", action="store_true", help="skip STL/PLY/VTP meshes")
    p.set_defaults(func=_run_measure)


def _run_measure(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise MeasurementError(f"--out {args.out} is a file; give a folder for the report")
    labels = LabelMap.read(args.labelmap, args.convention)
    second = LabelMap.read(args.compare, args.convention) if args.compare else None
    m, _, written = measure_and_write(labels, args.out, side=args.side, second_visit=second,
                                      meshes=not args.no_meshes, title=f"KneeAI measurements: {args.labelmap.name}")
    print(f"{m.frame.side} knee measured in {m.seconds:.1f} s; report: {written['html']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kneeai", description=__doc__.splitlines()[0])
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MeasurementError, OSError) as e:  # OSError: a missing file, a folder that cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
