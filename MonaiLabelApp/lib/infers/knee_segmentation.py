"""MONAI Label infer task ``knee_segmentation``: all knee structures, in the input's own geometry."""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

import SimpleITK as sitk
import torch
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.interactive.request import checked_echo
from lib.model_store import ModelStore
from lib.networks import KneeModelConfig, KneeNetworks
from lib.segmenter import KneeSegmenter
from lib.transforms.image_io import InputError, read_mri, write_atomically

logger = logging.getLogger(__name__)

UNTRAINED = "untrained"
RESULT_SUFFIXES = (".nii.gz", ".nrrd")


def pick_device(requested: str | None) -> torch.device:
    """The GPU when there is one (unless the request asks for the CPU), the CPU otherwise."""
    if requested and str(requested).startswith("cpu"):
        return torch.device("cpu")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def weights_on_disk(store: ModelStore, version: str) -> tuple[int, int, int]:
    """What tells one saving of ``version``'s weights from the next: training saves a better epoch
    under the same version name. Each save is a new file renamed over the old one, so its inode
    differs from the file it replaces even where modification times are coarse."""
    stat = store.model_path(version).stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class KneeSegmentation(InferTask):
    def __init__(self, store: ModelStore, schema, config: KneeModelConfig, description: str):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=schema.labels_for_monailabel,
            dimension=3,
            description=description,
            config={"echo": 1, "result_extension": ".nii.gz"},
        )
        self.store = store
        self.schema = schema
        self.default_config = config
        self._loaded: tuple[tuple, KneeSegmenter] | None = None  # (what was loaded on which device, segmenter)
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return True  # an untrained model still runs (and says so), so a lab can start labelling at once

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model_version"] = self.store.promoted_version(UNTRAINED)
        return info

    def segmenter(self, device: torch.device) -> tuple[str, KneeSegmenter]:
        """The segmenter of the promoted model version, reloaded when another version is promoted or the
        promoted version's weights are saved again (training does so at each better epoch)."""
        with self._lock:
            promoted = self.store.promoted()
            version = promoted["version"] if promoted else UNTRAINED
            key = (version, weights_on_disk(self.store, version) if promoted else None, str(device))
            if self._loaded and self._loaded[0] == key:
                return version, self._loaded[1]
            if promoted:
                networks = KneeNetworks.from_state(self.store.load_version(version))
            else:
                logger.warning("No trained knee model yet: running an untrained network (train one first)")
                networks = KneeNetworks.create(self.default_config)
            segmenter = KneeSegmenter(networks, self.schema, device)
            self._loaded = (key, segmenter)
            return version, segmenter

    def __call__(self, request) -> tuple[str, dict]:
        extension = request.get("result_extension", ".nii.gz")
        if extension not in RESULT_SUFFIXES:
            raise HTTPException(400, f"result_extension must be one of {RESULT_SUFFIXES}, not {extension!r}")
        try:
            image = read_mri(request["image"], echo=checked_echo(request))
        except InputError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        device = pick_device(request.get("device"))
        version, segmenter = self.segmenter(device)
        result = segmenter.segment(image)
        out = tempfile.NamedTemporaryFile(suffix=extension, delete=False).name
        write_atomically(sitk.Cast(result.labels, sitk.sitkUInt8), out)
        params = {
            "model_version": version,
            "device": str(device),
            "label_names": self.schema.labels_for_monailabel,
            "joint_box_mm": {"lower": list(result.joint_box.lower), "upper": list(result.joint_box.upper)},
            "latencies": {k: round(v, 3) for k, v in result.timings.items()},
        }
        return out, params
