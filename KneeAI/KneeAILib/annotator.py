"""The annotator's server steps, as plain functions that a job runs on a worker thread.

Each step does network and file work only and returns plain data (``PixelVolume``s, dicts); building
MRML nodes from the results is mrml_adapter's job, on the main thread. The Slicer Logic and the tests
chain the same functions, so what the tests check is what the module does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .client import MODEL, BadResponse, KneeAIClient
from .schema import KneeSchema
from .upload import ConsentStore, upload_volume
from .volume import PixelVolume, VolumeError, read_volume_file, write_volume_atomically


@dataclass(frozen=True)
class Case:
    image_id: str
    image: PixelVolume
    info: dict[str, Any]


@dataclass(frozen=True)
class Proposal:
    labels: PixelVolume
    model_version: str
    params: dict[str, Any]


def fetch_server_info(client: KneeAIClient) -> tuple[dict[str, Any], KneeSchema]:
    """The server's /info and the knee schema it serves (which decides the label values); BadResponse
    for a server that answers but is not a KneeAI server."""
    info = client.info()
    if not isinstance(info, dict) or "knee_schema" not in info:
        raise BadResponse(f"{client.server_url} is not a KneeAI server (its /info has no knee_schema)")
    return info, KneeSchema.from_dict(info["knee_schema"])


def fetch_case(client: KneeAIClient, strategy: str = "random", image_id: str | None = None) -> Case | None:
    """The next case by ``strategy`` (or ``image_id`` when given), downloaded; None when none is left."""
    info: dict[str, Any] = {}
    if image_id is None:
        sample = client.next_sample(strategy)
        if sample is None:
            return None
        image_id, info = str(sample["id"]), sample
    path = client.download_image(image_id)
    try:
        return Case(image_id, read_volume_file(path), info)
    finally:
        path.unlink(missing_ok=True)


def propose_segmentation(client: KneeAIClient, image_id: str, schema: KneeSchema, model: str = MODEL,
                         image: PixelVolume | None = None) -> Proposal:
    """The server's segmentation of a datastore image, checked against the schema and, when ``image``
    (the image as the caller has it) is given, required to have its grid."""
    result = client.infer(image_id=image_id, model=model)
    try:
        labels = read_volume_file(result.label_path)
    finally:
        result.label_path.unlink(missing_ok=True)
    if image is not None:
        require_image_grid(labels, image, image_id)
    schema.check_label_values(labels.array)
    return Proposal(labels.with_array(labels.array.astype(np.uint8)), str(result.params.get("model_version", "?")),
                    result.params)


def require_image_grid(labels: PixelVolume, image: PixelVolume, image_name: str) -> None:
    """BadResponse when the server's label map does not have the image's grid: shown or written, it
    would not line up with the image."""
    difference = labels.geometry_difference(image)
    if difference:
        raise BadResponse(f"the segmentation of {image_name} does not have the image's grid: {difference}")


def submit_labels(client: KneeAIClient, image_id: str, labels: PixelVolume, image: PixelVolume,
                  schema: KneeSchema, tag: str = "final") -> dict:
    """Stores ``labels`` for ``image_id`` in exactly the image's geometry (as downloaded), schema-checked."""
    if not labels.same_geometry(image):
        raise VolumeError(f"The label map's grid {labels.size} does not match the image {image.size}; "
                          "export the segmentation with the image as reference")
    schema.check_label_values(labels.array)
    exact = image.with_array(np.asarray(labels.array, dtype=np.uint8))  # the server's own numbers, no rounding
    with tempfile.TemporaryDirectory(prefix="kneeai-submit-") as tmp:
        path = write_volume_atomically(exact, Path(tmp) / "label.nii.gz")
        return client.save_label(image_id, path, tag=tag)


def upload_and_propose(client: KneeAIClient, image_id: str | None, image: PixelVolume, consent: ConsentStore,
                       schema: KneeSchema, model: str = MODEL) -> tuple[str, Proposal]:
    """Segments a server image (``image_id``) or, when it has none, uploads ``image`` first (voxels and
    geometry only, with the user's consent). Returns the image id and the proposal."""
    image_id = image_id or upload_volume(client, image, consent)
    return image_id, propose_segmentation(client, image_id, schema, model, image=image)
