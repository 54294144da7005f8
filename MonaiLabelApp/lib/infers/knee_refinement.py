"""MONAI Label infer tasks ``knee_refinement`` (clicks) and ``knee_scribbles`` (painted strokes).

Both refine ONE structure of the label map the client uploads (``label``: the whole map or only its
ROI block) on the datastore image it names, at the image's native resolution, and answer the ROI
block's new labels (geometry of that block of the image). The image is read once and kept in memory
(a few recent ones), so a click costs the refinement, not the decompression of the whole volume.
Clicks use the trained click network when a version is promoted in the refinement model store, the
random walker otherwise; ``params.method`` says which.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.infers.knee_segmentation import pick_device, weights_on_disk
from lib.interactive.network import click_network_from_state
from lib.interactive.refine import Refiner, network_refiner, walker_refiner
from lib.interactive.request import RequestError, checked_echo, parse_click_request, roi_labels
from lib.interactive.scribbles import refine_with_scribbles
from lib.model_store import ModelStore
from lib.transforms.image_io import InputError, read_mri, read_volume, same_geometry, write_atomically
from lib.transforms.working_grid import sub_grid

logger = logging.getLogger(__name__)

CACHED_IMAGES = 3


class ImageCache:
    """The last few images read, keyed by path and modification time (a replaced file is re-read)."""

    def __init__(self, size: int = CACHED_IMAGES):
        self.size = size
        self._images: OrderedDict[tuple, tuple[sitk.Image, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, echo: int = 1) -> tuple[sitk.Image, np.ndarray]:
        key = (str(path), Path(path).stat().st_mtime_ns if Path(path).exists() else 0, echo)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        image = read_mri(path, echo=echo)  # NaN or constant voxels: the walker would answer silently
        entry = (image, sitk.GetArrayFromImage(image).astype(np.float32))
        with self._lock:
            self._images[key] = entry
            while len(self._images) > self.size:
                self._images.popitem(last=False)
        return entry


class _OneStructureTask(InferTask):
    def __init__(self, schema, description: str, cache: ImageCache):
        super().__init__(type=InferType.DEEPEDIT, labels=schema.labels_for_monailabel, dimension=3,
                         description=description, config={"result_extension": ".nii.gz"})
        self.schema = schema
        self.cache = cache

    def is_valid(self) -> bool:
        return True

    def _inputs(self, request, need_clicks: bool = True):
        request["save_label"] = False  # an ROI block must never be stored as the image's label
        if not request.get("label"):
            raise RequestError("Send the current label map as the 'label' file (the whole map or its roi block)", 422)
        try:
            image, array = self.cache.get(request["image"], checked_echo(request))
            label = read_volume(request["label"])
        except InputError as e:
            raise RequestError(str(e), 422) from e
        size = image.GetSize()
        parsed = parse_click_request(request, self.schema, size, need_clicks)
        labels = roi_labels(sitk.GetArrayViewFromImage(label), parsed, size)
        _check_label_grid(label, image, parsed)
        unknown = sorted(set(np.unique(labels).tolist()) - self.schema.allowed_values())
        if unknown:
            raise RequestError(f"The label map has values the knee schema does not know: {unknown}", 422)
        return image, array[parsed.roi_slices], labels.astype(np.uint8), parsed

    def _answer(self, image, parsed, new_labels, request, params) -> tuple[str, dict]:
        lo, hi = parsed.roi
        block = sitk.GetImageFromArray(new_labels.astype(np.uint8))
        grid = sub_grid(image, lo, tuple(b - a for a, b in zip(lo, hi)))
        block.SetSpacing(grid.spacing)
        block.SetOrigin(grid.origin)
        block.SetDirection(grid.direction)
        out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        write_atomically(block, out)
        params.update({"structure": parsed.structure, "roi": [list(lo), list(hi)]})
        return out, params


def _check_label_grid(label: sitk.Image, image: sitk.Image, parsed) -> None:
    """The label map lies on the image's grid, or on the roi's block of it: a label of the right size on
    another grid (origin, spacing or direction) would be refined where it is not."""
    lo, hi = parsed.roi
    whole = label.GetSize() == image.GetSize()
    grid = (sub_grid(image, (0, 0, 0), image.GetSize()) if whole
            else sub_grid(image, lo, tuple(b - a for a, b in zip(lo, hi))))
    reference = sitk.Image([int(v) for v in grid.size], sitk.sitkUInt8)
    reference.SetSpacing(grid.spacing)
    reference.SetOrigin(grid.origin)
    reference.SetDirection(grid.direction)
    if not same_geometry(label, reference):
        def rounded(values, digits):
            return [round(float(v), digits) for v in values]

        raise RequestError(f"The label map is not on the image's grid{'' if whole else ' at the roi'}: origin "
                           f"{rounded(label.GetOrigin(), 3)} spacing {rounded(label.GetSpacing(), 4)}, expected "
                           f"{rounded(grid.origin, 3)} {rounded(grid.spacing, 4)} (directions must match too)", 422)


class KneeRefinement(_OneStructureTask):
    def __init__(self, store: ModelStore, schema, cache: ImageCache, description: str):
        super().__init__(schema, description, cache)
        self.store = store
        self._loaded: tuple[tuple, Refiner] | None = None  # (what was loaded on which device, its refiner)
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model_version"] = self.store.promoted_version("random_walker")
        return info

    def refiner(self, device) -> Refiner:
        """The promoted click network, or the random walker; reloaded when another version is promoted
        or the promoted version's weights are saved again (training does so at each better epoch)."""
        with self._lock:
            promoted = self.store.promoted()
            if not promoted:
                return walker_refiner()
            version = promoted["version"]
            key = (version, weights_on_disk(self.store, version), str(device))
            if not self._loaded or self._loaded[0] != key:
                config, network = click_network_from_state(self.store.load_version(version))
                self._loaded = (key, network_refiner(f"click_network {version}", network, config, device))
            return self._loaded[1]

    def __call__(self, request) -> tuple[str, dict]:
        t0 = time.perf_counter()
        image, array, labels, parsed = self._inputs(request)
        device = pick_device(request.get("device"))
        refiner = self.refiner(device)
        spacing_zyx = tuple(image.GetSpacing()[::-1])
        new, summary = refiner(array, labels, parsed.value, parsed.in_roi(parsed.foreground),
                               parsed.in_roi(parsed.background), spacing_zyx, focus=parsed.in_roi(parsed.focus))
        params = {"method": refiner.name, "device": str(device), "added": summary["added"],
                  "removed": summary["removed"], "latency_s": round(time.perf_counter() - t0, 3)}
        return self._answer(image, parsed, new, request, params)


class KneeScribbles(_OneStructureTask):
    """Foreground/background scribbles for one structure (``foreground``/``background``: the painted
    voxels [i, j, k]; either may be empty: a background stroke alone removes what it touches) -> random
    walker over the scribbles' reach (see lib/interactive/scribbles.py)."""

    def __call__(self, request) -> tuple[str, dict]:
        t0 = time.perf_counter()
        image, array, labels, parsed = self._inputs(request, need_clicks=False)
        if not (parsed.foreground or parsed.background):
            raise RequestError("No scribbles: give the painted 'foreground' or 'background' voxels", 400)
        spacing_zyx = tuple(image.GetSpacing()[::-1])
        new, summary = refine_with_scribbles(array, labels, parsed.value, parsed.in_roi(parsed.foreground),
                                             parsed.in_roi(parsed.background), spacing_zyx)
        params = {"method": "random_walker_scribbles", "added": summary["added"], "removed": summary["removed"],
                  "latency_s": round(time.perf_counter() - t0, 3)}
        return self._answer(image, parsed, new, request, params)
