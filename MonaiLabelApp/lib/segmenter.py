"""Coarse-to-fine knee segmentation of one MRI volume, returned on the volume's own grid.

1. coarse: the whole volume at a coarse spacing -> a rough label map -> the joint's world box;
2. fine: the joint box at a fine spacing -> class probabilities;
3. back: probabilities resampled (linearly) onto the original voxels the fine grid covers, coarse
   labels (nearest) everywhere else, then anatomical clean-up and the tibial plates split at their
   gap and named (lib/transforms/tibial_plates.py). The result has the input's exact geometry.
Used by the inference task and by training's validation, so both measure the same thing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from lib.inference import predict_logits
from lib.networks import SIZE_MULTIPLE, KneeNetworks
from lib.transforms.postprocess import anatomical_cleanup
from lib.transforms.tibial_plates import name_tibial_plates
from lib.transforms.working_grid import (
    Box,
    Grid,
    grid_for_box,
    index_region,
    normalize_intensity,
    resample,
    sub_grid,
    box_of_mask,
    world_box,
)

# Structures that mark the joint: cartilages and menisci (values 5..10 in the schema).
JOINT_KINDS = ("cartilage", "meniscus")

logger = logging.getLogger(__name__)


@dataclass
class SegmentationResult:
    labels: sitk.Image
    joint_box: Box
    timings: dict = field(default_factory=dict)


def network_input(image: sitk.Image, box: Box, spacing) -> tuple[sitk.Image, np.ndarray]:
    """The image on a world-aligned grid of ``spacing`` over ``box``, and its normalised voxels."""
    working = resample(image, grid_for_box(box, spacing), sitk.sitkLinear, pixel_type=sitk.sitkFloat32)
    return working, normalize_intensity(sitk.GetArrayViewFromImage(working))


class KneeSegmenter:
    def __init__(self, networks: KneeNetworks, schema, device: torch.device):
        self.networks = networks.eval().to(device)
        self.config = networks.config
        self.schema = schema
        self.device = device
        self.joint_values = [s.value for s in schema.structures if s.kind in JOINT_KINDS]

    # -- stages ----------------------------------------------------------------------------------
    def coarse(self, image: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
        """The coarse label map on a coarse world-aligned grid covering the whole image."""
        coarse_image, array = network_input(image, world_box(image), self.config.coarse_spacing)
        logits = predict_logits(self.networks.coarse, array[None], self.config.coarse_patch,
                                self.config.single_pass_voxels, self.device, SIZE_MULTIPLE)
        labels = logits.argmax(0).to(torch.uint8).cpu().numpy()
        return coarse_image, labels

    def coarse_tta_probabilities(self, image: sitk.Image) -> np.ndarray:
        """Coarse class probabilities averaged over test-time variants (left-right flip, gamma):
        where the variants disagree or stay unsure, the model is uncertain."""
        coarse_image, array = network_input(image, world_box(image), self.config.coarse_spacing)
        variants = [(array, False), (array[:, :, ::-1], True),
                    (np.sign(array) * np.abs(array) ** 0.8, False), (np.sign(array) * np.abs(array) ** 1.25, False)]
        total = None
        for variant, flipped in variants:
            logits = predict_logits(self.networks.coarse, variant[None], self.config.coarse_patch,
                                    self.config.single_pass_voxels, self.device, SIZE_MULTIPLE)
            probs = torch.softmax(logits, dim=0).cpu().numpy()
            probs = probs[:, :, :, ::-1] if flipped else probs
            total = probs if total is None else total + probs
        return total / len(variants)

    def joint_box(self, image: sitk.Image, coarse_image: sitk.Image, coarse_labels: np.ndarray) -> Box:
        """Where to look closely: the joint structures, else all structures, else the image centre."""
        box = box_of_mask(np.isin(coarse_labels, self.joint_values), coarse_image)
        if box is None:
            box = box_of_mask(coarse_labels > 0, coarse_image)
        whole = world_box(image)
        if box is None:
            box = whole
        return box.grown(self.config.roi_margin_mm).clamped(self.config.max_roi_mm).intersect(whole)

    def fine_probabilities(self, image: sitk.Image, box: Box) -> tuple[np.ndarray, sitk.Image]:
        """Class probabilities (C, z, y, x) on a fine world-aligned grid over ``box``, and that grid."""
        fine_image, array = network_input(image, box, self.config.fine_spacing)
        logits = predict_logits(self.networks.fine, array[None], self.config.fine_patch,
                                self.config.single_pass_voxels, self.device, SIZE_MULTIPLE)
        return torch.softmax(logits, dim=0).cpu().numpy(), fine_image

    def labels_on_original_grid(self, probs: np.ndarray, fine_image: sitk.Image, image: sitk.Image,
                                start, size) -> tuple[np.ndarray, np.ndarray]:
        """(labels, covered) on the original voxels of the block (start, size): the argmax of linearly
        interpolated probabilities, and which voxels the fine grid covers. The block is the index
        range around the fine box, so it holds voxels just outside it (a rim half a voxel deep, and
        the corners of an oblique image); they get no fine label, else a seam of background would cut
        every bone that crosses the box in two and clean-up would keep only one part.
        Each class is resampled only inside its own bounding box, keeping a running maximum: a
        fraction of the time and memory of resampling every channel everywhere."""
        block = sub_grid(image, start, size)
        best = sitk.GetArrayFromImage(resample(_scalar(probs[0], fine_image), block, sitk.sitkLinear,
                                               default=-1.0))
        covered = best >= 0.0
        labels = np.zeros(best.shape, dtype=np.uint8)
        for value in range(1, probs.shape[0]):
            region = box_of_mask(probs[value] > 0.05, fine_image)
            if region is None or probs[value].max() < 0.3:
                continue
            (bx, by, bz), (sx, sy, sz) = index_region(image, region.grown(max(self.config.fine_spacing)))
            (x0, y0, z0) = start
            # The class's box, clipped to the block, in block coordinates.
            lo = np.maximum([bz - z0, by - y0, bx - x0], 0)
            hi = np.minimum([bz - z0 + sz, by - y0 + sy, bx - x0 + sx], best.shape)
            if np.any(hi <= lo):
                continue
            sub = sub_grid(image, (int(x0 + lo[2]), int(y0 + lo[1]), int(z0 + lo[0])),
                           (int(hi[2] - lo[2]), int(hi[1] - lo[1]), int(hi[0] - lo[0])))
            p = sitk.GetArrayFromImage(resample(  # a copy: a view would outlive its temporary image
                _scalar(probs[value], fine_image), sub, sitk.sitkLinear))
            window = tuple(slice(a, b) for a, b in zip(lo, hi))
            wins = p > best[window]
            best[window][wins] = p[wins]
            labels[window][wins] = value
        labels[~covered] = 0
        return labels, covered

    # -- whole pipeline --------------------------------------------------------------------------
    def segment(self, image: sitk.Image) -> SegmentationResult:
        timings = {}
        t0 = time.perf_counter()
        coarse_image, coarse_labels = self.coarse(image)
        timings["coarse_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        box = self.joint_box(image, coarse_image, coarse_labels)
        probs, fine_image = self.fine_probabilities(image, box)
        timings["fine_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        # Outside the joint box: the coarse labels of bones only, nearest-neighbour onto the original grid.
        bones_only = np.where(np.isin(coarse_labels, self.joint_values), 0, coarse_labels).astype(np.uint8)
        coarse_label_image = sitk.GetImageFromArray(bones_only)
        coarse_label_image.CopyInformation(coarse_image)
        labels = sitk.GetArrayFromImage(
            resample(coarse_label_image, Grid.of(image), sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
        )
        # Where the fine grid covers: fine probabilities, linearly onto the original voxels, then argmax.
        start, size = index_region(image, box)
        fine_labels, covered = self.labels_on_original_grid(probs, fine_image, image, start, size)
        (x0, y0, z0), (sx, sy, sz) = start, size
        labels[z0:z0 + sz, y0:y0 + sy, x0:x0 + sx][covered] = fine_labels[covered]
        anatomical_cleanup(labels, self.schema)
        logger.info(f"Tibial cartilage plates: {name_tibial_plates(labels, image, self.schema)}")
        result = sitk.GetImageFromArray(labels)
        result.CopyInformation(image)
        timings["resample_postprocess_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        return SegmentationResult(result, box, timings)



def _scalar(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.CopyInformation(like)
    return image
