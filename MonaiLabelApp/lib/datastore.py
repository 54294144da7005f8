"""A local datastore that checks what it is given before it stores anything.

MONAI Label's LocalDatastore copies whatever arrives. Here an upload is read and checked first (a 3D
volume; a label with its image's exact geometry and only schema values; ids without path tricks),
rejected with a 4xx answer that says why, and only then written, to a temporary file renamed into
place: a bad or interrupted upload never damages what the datastore already holds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel

from KneeAILib.atomic_files import write_text_atomically
from lib.transforms.image_io import InputError, read_upload, same_geometry, volume_suffix, write_atomically

logger = logging.getLogger(__name__)

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
LABEL_SUFFIX = ".nii.gz"


class RejectedInput(HTTPException):
    """An upload or id the server will not use; becomes the HTTP answer (4xx) with the reason."""

    def __init__(self, detail: str, status_code: int = 422):
        super().__init__(status_code=status_code, detail=detail)


def check_id(value: str, what: str = "image id") -> str:
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or ".." in value:
        raise RejectedInput(
            f"Invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only (no paths)", status_code=400
        )
    return value


class KneeDatastore(LocalDatastore):
    """Several processes hold a datastore on one studies folder: the server, and MONAI Label's scoring and
    training task processes. MONAI Label keeps the record (datastore_v2.json) in memory and rewrites it
    whole from there, so one process's write dropped what another had written since it last read the
    record (a label submitted while the scoring task ran vanished from the record; the scores that task
    wrote were dropped at the server's next write, and the server never saw them). Every change here is
    made to the record as it is on disk, under the lock, and reads take up what other processes wrote."""

    def __init__(self, datastore_path: str, schema, **kwargs):
        self.schema = schema
        self._record_seen = None
        super().__init__(datastore_path, **kwargs)

    # -- the record shared with other processes ------------------------------------------------------
    def _record_signature(self):
        try:
            stat = os.stat(self._datastore_config_path)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _reload(self, always: bool = False) -> None:
        """Reads the record again if another process replaced it since this one read or wrote it
        (``always``: in any case; for changes, made while holding the lock)."""
        signature = self._record_signature()
        if signature is None or (signature == self._record_seen and not always):
            return
        try:
            with open(self._datastore_config_path, encoding="utf-8") as f:
                record = LocalDatastoreModel.model_validate_json(f.read())
        except (OSError, ValueError) as e:  # as MONAI Label does: go on with the record held here
            logger.error(f"Cannot read {self._datastore_config_path} ({e}); keeping the record held in memory")
            self._record_seen = signature
            return
        record.base_path = self._datastore_path
        self._datastore = record
        self._record_seen = signature
        self._config_ts = os.stat(self._datastore_config_path).st_mtime

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        self._reload()
        return super().get_image_info(image_id)

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        self._reload()
        return super().get_label_info(label_id, label_tag)

    def get_labeled_images(self, label_tag=None, labels=None) -> list[str]:
        self._reload()
        return super().get_labeled_images(label_tag, labels)

    def get_unlabeled_images(self, label_tag=None, labels=None) -> list[str]:
        self._reload()
        return super().get_unlabeled_images(label_tag, labels)

    def list_images(self) -> list[str]:
        self._reload()
        return super().list_images()

    def json(self):
        self._reload()
        return super().json()

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        with FileLock(self._lock_file):
            self._reload(always=True)
            obj = self._datastore.objects.get(image_id)
            if not obj:
                raise RejectedInput(f"Image {image_id!r} not found", 404)
            obj.image.info.update(info)
            self._update_datastore_file(lock=False)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        with FileLock(self._lock_file):
            self._reload(always=True)
            label = self._datastore.label(label_id, label_tag)
            if not label:
                raise RejectedInput(f"Label {label_id!r} with tag {label_tag!r} not found", 404)
            label.info.update(info)
            self._update_datastore_file(lock=False)

    # -- images --------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        suffix = volume_suffix(image_filename)
        if not suffix:
            raise RejectedInput(f"Unsupported image file type: {Path(image_filename).name}; send NIfTI or NRRD", 415)
        image_id = check_id(image_id or Path(image_filename).name[: -len(suffix)])
        try:
            image = read_upload(image_filename)
        except InputError as e:
            raise RejectedInput(str(e)) from e
        if image_id in self._datastore.objects:
            raise RejectedInput(f"Image {image_id!r} already exists; remove it first or use another id", 409)
        # On macOS and Windows file systems, names differing only in case are one file: the new image
        # would replace the other's and be paired with its labels.
        same_file = [k for k in self._datastore.objects if k.casefold() == image_id.casefold()]
        if same_file:
            raise RejectedInput(f"Image {image_id!r} differs from the existing {same_file[0]!r} only in letter case; "
                                "use another id", 409)
        name = self._filename(image_id, suffix)
        dest = Path(self._datastore.image_path()) / name
        with FileLock(self._lock_file):
            self._reload(always=True)
            write_atomically(image, dest)
            info = dict(image_info or {})
            info.update({"ts": int(time.time()), "name": name})
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=suffix))
            self._update_datastore_file(lock=False)
        logger.info(f"Added image {image_id} {image.GetSize()}")
        return image_id

    def _update_datastore_file(self, lock: bool = True) -> None:
        """MONAI Label rewrites datastore_v2.json in place: a process killed mid-write (the scoring task is
        stopped with SIGKILL) left half a file, and the next start failed on it. Written to a temporary
        file and renamed instead."""
        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            write_text_atomically(Path(self._datastore_config_path), text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime
            self._record_seen = self._record_signature()

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    # -- labels --------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        check_id(image_id)
        check_id(label_tag, "label tag")
        # On macOS and Windows file systems, labels/FINAL is labels/final: a label sent as "FINAL"
        # would replace the final label of the image while being recorded as another one.
        tags = {"final", "original"} | {t for o in self._datastore.objects.values() for t in o.labels}
        same_folder = sorted(t for t in tags if t != label_tag and t.casefold() == label_tag.casefold())
        if same_folder:
            raise RejectedInput(f"Label tag {label_tag!r} differs from the tag {same_folder[0]!r} only in letter "
                                "case; use that tag or another name", 409)
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise RejectedInput(f"Image {image_id!r} not found", 404)
        label = self.checked_label(image_id, label_filename)
        label_dir = Path(self._datastore.label_path(label_tag))
        name = self._filename(image_id, LABEL_SUFFIX)
        with FileLock(self._lock_file):
            self._reload(always=True)
            obj = self._datastore.objects.get(image_id)
            if not obj:
                raise RejectedInput(f"Image {image_id!r} not found", 404)
            write_atomically(label, label_dir / name)
            info = dict(label_info or {})
            info.update({"ts": int(time.time()), "name": name})
            obj.labels[label_tag] = DataModel(info=info, ext=LABEL_SUFFIX)
            self._update_datastore_file(lock=False)
        logger.info(f"Saved label {label_tag}/{name}")
        return image_id

    def checked_label(self, image_id: str, label_filename: str) -> sitk.Image:
        """The label as uint8 in its image's geometry, or a RejectedInput saying what is wrong."""
        try:
            label = read_upload(label_filename)
        except InputError as e:
            raise RejectedInput(f"Label for {image_id}: {e}") from e
        image_path = self.get_image_uri(image_id)
        reader = sitk.ImageFileReader()
        reader.SetFileName(image_path)
        reader.ReadImageInformation()
        reference = sitk.Image([int(s) for s in reader.GetSize()], sitk.sitkUInt8)
        reference.SetSpacing(reader.GetSpacing())
        reference.SetOrigin(reader.GetOrigin())
        reference.SetDirection(reader.GetDirection())
        if not same_geometry(label, reference):
            raise RejectedInput(
                f"Label for {image_id} does not match its image: label size {label.GetSize()} spacing "
                f"{_round(label.GetSpacing())} origin {_round(label.GetOrigin())}; image size {reference.GetSize()} "
                f"spacing {_round(reference.GetSpacing())} origin {_round(reference.GetOrigin())}"
            )
        values = sitk.GetArrayViewFromImage(label)
        if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            raise RejectedInput(f"Label for {image_id} has non-integer values; send a label map")
        unknown = sorted(int(v) for v in np.unique(values) if int(v) not in self.schema.allowed_values())
        if unknown:
            raise RejectedInput(
                f"Label for {image_id} has values the knee schema does not know: {unknown}; "
                f"known: {sorted(self.schema.allowed_values())}"
            )
        clean = sitk.GetImageFromArray(values.astype(np.uint8))
        clean.CopyInformation(reference)  # exactly the image's geometry, no header carried over
        return clean


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]

