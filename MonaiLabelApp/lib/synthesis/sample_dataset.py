"""A small synthetic knee MRI dataset in MONAI Label's LocalDatastore layout, for demos and tests.

    OUT_DIR/knee_phantom_000.nii.gz ...            images (int16, MRI-like, mixed contrasts)
    OUT_DIR/labels/final/knee_phantom_000.nii.gz   labels of the first ``n_labelled`` cases (uint8,
                                                   knee schema values, identical geometry)

Each case is a procedural phantom (``phantom.make_knee_phantom``, right and left knees alternating)
imaged with ``synthesize.synthesize_image`` in the contrasts dess, pdfs, t2 in turn, sagittal slices.
Nothing here comes from real data. The default 6 cases take a few seconds and ~10 MB.

Safe to re-run: existing files are kept as they are, and every file is written by
``image_io.write_atomically`` (a temporary name in a ``.partial/`` folder beside it, then a rename), so
a server watching OUT_DIR never sees half a file.

Command line (run from the MonaiLabelApp folder, which is the app directory the server also uses):

    cd MonaiLabelApp && python -m lib.synthesis.sample_dataset OUT_DIR [--cases 6] [--labelled 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lib.transforms.image_io import write_atomically

from .phantom import make_knee_phantom
from .synthesize import synthesize_image

CASE_PREFIX = "knee_phantom_"
CONTRAST_CYCLE = ("dess", "pdfs", "t2")
LABEL_TAG = "final"  # MONAI Label's tag for accepted labels
INTENSITY_SCALE = 1000.0  # synthetic images are in relative units (fluid ~ 1); stored like scanner int16


def case_name(index: int) -> str:
    return f"{CASE_PREFIX}{index:03d}.nii.gz"


def generate_sample_dataset(out_dir: str | os.PathLike, n_cases: int = 6, n_labelled: int = 3, seed: int = 0) -> list[str]:
    """Write the dataset (only the files that are missing) and return all image paths, in order."""
    if not 0 <= n_labelled <= n_cases:
        raise ValueError(f"n_labelled must be between 0 and n_cases ({n_cases}), not {n_labelled}")
    out = Path(out_dir)
    label_dir = out / "labels" / LABEL_TAG
    label_dir.mkdir(parents=True, exist_ok=True)

    image_paths = []
    for index in range(n_cases):
        image_path = out / case_name(index)
        label_path = label_dir / case_name(index) if index < n_labelled else None
        image_paths.append(str(image_path))
        if image_path.exists() and (label_path is None or label_path.exists()):
            continue
        case_seed = seed * 10_000 + index
        labels = make_knee_phantom(case_seed, side="right" if index % 2 == 0 else "left")
        if not image_path.exists():
            image = synthesize_image(labels, case_seed, CONTRAST_CYCLE[index % len(CONTRAST_CYCLE)], plane="sagittal")
            write_atomically(_as_int16(image), image_path)
        if label_path is not None and not label_path.exists():
            write_atomically(labels, label_path)
    return image_paths


def _as_int16(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image) * INTENSITY_SCALE
    out = sitk.GetImageFromArray(np.clip(np.rint(array), 0, np.iinfo(np.int16).max).astype(np.int16))
    out.CopyInformation(image)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic knee MRI sample dataset (MONAI Label layout).")
    parser.add_argument("out_dir", help="dataset folder (created if needed)")
    parser.add_argument("--cases", type=int, default=6, help="number of images (default 6)")
    parser.add_argument("--labelled", type=int, default=3, help="how many of them get labels/final (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    args = parser.parse_args(argv)
    paths = generate_sample_dataset(args.out_dir, args.cases, args.labelled, args.seed)
    print(f"{len(paths)} images ({min(args.labelled, len(paths))} labelled) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
