"""A MONAI Label datastore of synthesised MRIs made from knee label maps, for training.

    STUDIES/<knee>__v00.nii.gz ...               synthesised images (int16, relative units x 1000)
    STUDIES/labels/final/<knee>__v00.nii.gz      their labels (uint8, schema values, identical grid)

Each knee gives ``variants`` images. Variant j of a knee is ``synthesize_pair(labels, seed)`` with a
seed hashed from (base seed, knee id, j), so it does not depend on which other knees are in the folder
or on the order of files; the label map is randomly deformed (a new plausible anatomy each time) and
the image drawn with the contrast family CONTRAST_CYCLE[j % 4] (dess, pdfs, t2, then one drawn from
the seed, "random" included), with resolution, slice plane, bias and noise drawn from the seed.
Existing files are kept (they are the same bytes a re-run would write), so an interrupted run resumes.

The knee of an image id is everything before ``__v``: that is how the training split keeps all variants
of a knee on one side, and how evaluation refuses to test a model on a knee it trained on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lib.evaluation.label_maps import read_knee_labels, resample_labels
from lib.model_store import read_json, write_json_atomically
from lib.synthesis import draw_parameters, synthesize_pair
from lib.trainers.training_data import case_id
from lib.transforms.image_io import write_atomically

CONTRAST_CYCLE = ("dess", "pdfs", "t2", None)
VARIANT_MARK = "__v"
VARIANT_PATTERN = re.compile(r"^(?P<knee>.+)__v(?P<variant>\d{2,})$")
LABEL_TAG = "final"
INTENSITY_SCALE = 1000.0  # synthetic intensities are relative (fluid ~ 1): stored like scanner int16


def image_id(knee: str, variant: int) -> str:
    return f"{knee}{VARIANT_MARK}{variant:02d}"


def knee_of(case: str) -> str:
    """The knee id of a datastore case id (or image file name without suffix)."""
    match = VARIANT_PATTERN.match(case)
    return match.group("knee") if match else case


def seen_knees(metrics: dict) -> set[str] | None:
    """Knees whose images the version trained on or was selected on (validation); None when its record
    cannot say (damaged or without the lists): then no knee can be called held out."""
    names = metrics.get("train_cases"), metrics.get("validation_cases")
    if "damaged" in metrics or not all(isinstance(n, list) for n in names):
        return None
    return {knee_of(case_id(name)) for name in names[0] + names[1]}


def stable_seed(*parts) -> int:
    """A 31-bit seed from its parts, the same on every machine and Python version."""
    digest = hashlib.sha1(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Variant:
    image_id: str
    knee: str
    variant: int
    seed: int
    contrast: str
    plane: str
    slice_thickness_mm: float


def check_finite(image: sitk.Image, what: str) -> sitk.Image:
    """Never train or test on an image with NaN/inf voxels: fail loudly instead."""
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise ValueError(f"{what}: the synthesised image has non-finite voxels")
    return image


def plan_variants(knees: list[str], variants_of: dict[str, int], base_seed: int) -> list[Variant]:
    out = []
    for knee in knees:
        for j in range(variants_of[knee]):
            seed = stable_seed("train", base_seed, knee, j)
            drawn = draw_parameters(seed, CONTRAST_CYCLE[j % len(CONTRAST_CYCLE)])  # cheap: no rendering
            out.append(Variant(image_id(knee, j), knee, j, seed, drawn.contrast, drawn.plane,
                               round(drawn.slice_thickness_mm, 2)))
    return out


def build_datastore(studies: Path, label_files: dict[str, Path], conventions: dict[str, str], plan: list[Variant],
                    spacing_mm: float, log=print) -> list[dict]:
    """Write the planned images and labels (missing ones only) and remove earlier variants that are not
    in the plan, so the datastore holds exactly the plan. ``conventions``: knee -> label convention.
    Returns the manifest (one dict per image)."""
    studies = Path(studies)
    label_dir = studies / "labels" / LABEL_TAG
    label_dir.mkdir(parents=True, exist_ok=True)
    planned = {v.image_id for v in plan}
    # A variant left by an earlier run (another fold, more variants) must not be trained on.
    for folder in (studies, label_dir):
        for path in folder.glob(f"*{VARIANT_MARK}*.nii.gz"):
            if path.name[: -len(".nii.gz")] not in planned:
                path.unlink()
    manifest = []
    cached_knee, labels = None, None
    for v in plan:
        image_path, label_path = studies / f"{v.image_id}.nii.gz", label_dir / f"{v.image_id}.nii.gz"
        if not (image_path.exists() and label_path.exists()):
            if cached_knee != v.knee:
                labels = resample_labels(read_knee_labels(label_files[v.knee], conventions[v.knee]), spacing_mm)
                cached_knee = v.knee
            contrast = CONTRAST_CYCLE[v.variant % len(CONTRAST_CYCLE)]
            image, moved = synthesize_pair(labels, v.seed, contrast)
            check_finite(image, v.image_id)
            # Labels first: the datastore pairs an image with its label only once both exist.
            write_atomically(moved, label_path)
            write_atomically(_as_int16(image), image_path)
            log(f"synthesised {v.image_id} ({v.contrast}, {v.plane}, size {moved.GetSize()})")
        manifest.append(asdict(v))
    return manifest


def seed_validation_split(split_file: Path, plan: list[Variant], validation_knees: set[str]) -> None:
    """Write the trainer's split file (``fixed_split`` keeps what it finds there) so that validation
    is BY KNEE: every image of a validation knee validates, every other image trains. Without this the
    trainer would split images by their own hash, and variants of one knee would sit on both sides."""
    assigned = (read_json(split_file) or {}).get("assigned", {})
    for v in plan:
        assigned[v.image_id] = "validation" if v.knee in validation_knees else "train"
    write_json_atomically(split_file, {"assigned": assigned})


def pick_validation_knees(knees: list[str], seed: int, count: int | None = None) -> list[str]:
    """About one training knee in five (at least one when there are two or more), chosen by hash."""
    if count is None:
        count = max(1, round(len(knees) / 5)) if len(knees) >= 2 else 0
    if count >= len(knees):
        raise ValueError(f"{count} validation knees leave nothing to train on ({len(knees)} knees)")
    return sorted(sorted(knees, key=lambda k: stable_seed("validation", seed, k))[:count])


def _as_int16(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image) * INTENSITY_SCALE
    out = sitk.GetImageFromArray(np.clip(np.rint(array), 0, np.iinfo(np.int16).max).astype(np.int16))
    out.CopyInformation(image)
    return out
