"""Training data for the coarse-to-fine knee model: a fixed split, cached working grids, random crops.

The validation split is stored beside the model versions and never reshuffled: a case keeps the side
it was first put on, new cases are assigned by a hash of their id, so Dice figures of successive
model versions are comparable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lib.model_store import read_json, write_json_atomically
from lib.networks import SIZE_MULTIPLE, KneeModelConfig
from lib.transforms.image_io import read_volume, same_geometry
from lib.transforms.working_grid import (
    box_of_mask,
    grid_for_box,
    normalize_intensity,
    resample,
    world_box,
)

VALIDATION_EVERY = 5  # about one case in five is held out


def case_id(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def fixed_split(datalist: list[dict], split_file: Path) -> tuple[list[dict], list[dict]]:
    """(train, validation). Assignments persist in ``split_file``; at least one case validates when
    there are two or more knees. The unit is the knee (``knee_of``: the synthesised variants
    ``<knee>__vNN`` of one knee are one knee, any other image is its own): a new image takes the side its
    knee's images already have, a new knee is placed by a hash of its id. Split by image, variants of a
    validation knee trained, and the Dice that promotes was measured on a knee the model had learned."""
    from lib.evaluation.training_datastore import knee_of  # imports this module

    assigned: dict[str, str] = (read_json(split_file) or {}).get("assigned", {})
    cases = {case_id(d["image"]): d for d in datalist}
    knees = {knee_of(c) for c in cases}
    side_of_knee = {}
    for c in sorted(cases):
        if c in assigned:
            side_of_knee.setdefault(knee_of(c), assigned[c])
    new = sorted((c for c in cases if c not in assigned),
                 key=lambda c: (hashlib.sha1(knee_of(c).encode()).hexdigest(), c))
    for c in new:
        knee = knee_of(c)
        if knee not in side_of_knee:
            digest = int(hashlib.sha1(knee.encode()).hexdigest(), 16)
            has_validation = any(side == "validation" for k, side in assigned.items() if k in cases)
            if not has_validation and len(knees) >= 2:
                side_of_knee[knee] = "validation"
            else:
                side_of_knee[knee] = "validation" if digest % VALIDATION_EVERY == 0 else "train"
        assigned[c] = side_of_knee[knee]
    # With two knees both could end up in validation: keep at least one knee (all its images) to train on.
    if cases and all(assigned[c] == "validation" for c in cases):
        last = knee_of(sorted(cases)[-1])
        for c in cases:
            if knee_of(c) == last:
                assigned[c] = "train"
    write_json_atomically(split_file, {"assigned": assigned})
    train = [cases[c] for c in sorted(cases) if assigned[c] == "train"]
    validation = [cases[c] for c in sorted(cases) if assigned[c] == "validation"]
    return train, validation


@dataclass
class PreparedCase:
    case: str
    coarse_image: np.ndarray  # normalised, (z, y, x), coarse working grid
    coarse_labels: np.ndarray
    fine_image: np.ndarray  # normalised, fine working grid over the joint (with room to jitter)
    fine_labels: np.ndarray


def load_pair(item: dict, schema) -> tuple[sitk.Image, sitk.Image]:
    """The image and its label, checked: uploads are checked by the datastore, but a lab may copy label
    files into labels/final by hand, and a value the schema does not know would train as another class."""
    image = read_volume(item["image"])
    labels = sitk.ReadImage(item["label"])
    if not same_geometry(image, labels):
        raise ValueError(f"{case_id(item['image'])}: label geometry differs from its image")
    try:
        schema.check_label_values(sitk.GetArrayViewFromImage(labels))
    except ValueError as e:
        raise ValueError(f"{case_id(item['image'])}: label {Path(item['label']).name}: {e}") from e
    return image, labels


def prepare_case(item: dict, config: KneeModelConfig, joint_values: list[int], schema) -> PreparedCase:
    image, labels = load_pair(item, schema)
    coarse_grid = grid_for_box(world_box(image), config.coarse_spacing, SIZE_MULTIPLE)
    coarse_labels = resample(labels, coarse_grid, sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
    coarse_image = resample(image, coarse_grid, sitk.sitkLinear, pixel_type=sitk.sitkFloat32)

    label_array = sitk.GetArrayViewFromImage(coarse_labels)
    box = box_of_mask(np.isin(label_array, joint_values), coarse_labels) or box_of_mask(label_array > 0, coarse_labels)
    box = (box or world_box(image)).grown(config.roi_margin_mm * 1.5).clamped(config.max_roi_mm * 1.2)
    box = box.intersect(world_box(image))
    fine_grid = grid_for_box(box, config.fine_spacing, SIZE_MULTIPLE)
    fine_labels = resample(labels, fine_grid, sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
    fine_image = resample(image, fine_grid, sitk.sitkLinear, pixel_type=sitk.sitkFloat32)
    return PreparedCase(
        case=case_id(item["image"]),
        coarse_image=normalize_intensity(sitk.GetArrayFromImage(coarse_image)),
        coarse_labels=sitk.GetArrayFromImage(coarse_labels),
        fine_image=normalize_intensity(sitk.GetArrayFromImage(fine_image)),
        fine_labels=sitk.GetArrayFromImage(fine_labels),
    )


CROP_CENTRES = ("voxels", "classes")


def random_crop(image: np.ndarray, labels: np.ndarray, patch: tuple[int, int, int], rng: np.random.Generator,
                foreground_probability: float = 0.7, centres: str = "voxels") -> tuple[np.ndarray, np.ndarray]:
    """A crop of ``patch`` voxels (zero-padded where the volume is smaller), centred with
    ``foreground_probability`` on a labelled voxel, else anywhere. ``centres`` says how the labelled
    voxel is drawn: "voxels", any labelled voxel alike (large bones are most of the centres); "classes",
    first a label value present, each alike, then one of its voxels (as MONAI's RandCropByLabelClasses),
    so thin cartilage and the patella are centred as often as the femur."""
    if centres not in CROP_CENTRES:
        raise ValueError(f"crop centres must be one of {CROP_CENTRES}, not {centres!r}")
    pad = [(0, max(0, p - s)) for p, s in zip(patch, image.shape)]
    if any(after for _, after in pad):
        image = np.pad(image, pad)
        labels = np.pad(labels, pad)
    sample = labels.ravel()[:: 7]  # a sparse sample is enough to pick a centre
    foreground = np.flatnonzero(sample)
    if foreground.size and rng.random() < foreground_probability:
        if centres == "classes":
            present = np.unique(sample[foreground])
            foreground = np.flatnonzero(sample == present[rng.integers(present.size)])
        centre = np.unravel_index(foreground[rng.integers(foreground.size)] * 7, labels.shape)
    else:
        centre = tuple(rng.integers(0, s) for s in labels.shape)
    start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, labels.shape)]
    window = tuple(slice(s, s + p) for s, p in zip(start, patch))
    return image[window], labels[window]


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MRI-style augmentation. A left-right flip turns a right knee into a left knee with correct
    medial/lateral labels, so the network must learn them from anatomy, not from position."""
    if rng.random() < 0.5:
        image, labels = image[:, :, ::-1], labels[:, :, ::-1]  # x is the world left-right axis
    gamma = float(np.exp(rng.uniform(-0.35, 0.35)))
    image = np.sign(image) * np.abs(image) ** gamma
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-0.1, 0.1)
    image = image + rng.normal(0, rng.uniform(0, 0.05), image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels)
