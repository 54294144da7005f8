"""KneeAI: a MONAI Label app for knee MRI.

Start with ``make serve`` (README.md), or ``monailabel start_server --app MonaiLabelApp --studies DIR``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp

try:
    from KneeAILib.schema import KneeSchema
except ImportError:  # running from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "KneeAI"))
    from KneeAILib.schema import KneeSchema

from lib.activelearning.hand_outs import RandomUnreserved
from lib.activelearning.uncertainty import MostUncertain
from lib.background_priority import lower_priority_if_background_task
from lib.configs.knee_segmentation import fine_tune_overrides, model_config_from_conf
from lib.datastore import KneeDatastore, check_id
from lib.dicom_import import import_dicom_folders
from lib.configs.knee_refinement import REFINEMENT, click_config_from_conf, refinement_model_dir
from lib.infers.knee_refinement import ImageCache, KneeRefinement, KneeScribbles
from lib.infers.knee_segmentation import KneeSegmentation
from lib.model_store import ModelStore
from lib.transforms.image_io import InputError, check_upload
from lib.scoring.tta_uncertainty import TTAUncertaintyScoring
from lib.trainers.knee_refinement import KneeRefinementTrainer
from lib.trainers.knee_segmentation import KneeSegmentationTrainer

logger = logging.getLogger(__name__)

MODEL = "knee_segmentation"
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "Resources" / "knee_schema.json"


# The names tempfile.NamedTemporaryFile gives, in which MONAI Label's infer endpoint stores an upload
# (in the system's temporary folder): random, so not guessable, unlike a path a client might try.
UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9]+)*")


def is_upload(value: str) -> bool:
    path = Path(value)
    return (UPLOAD_NAME.fullmatch(path.name) is not None and path.is_file()
            and path.resolve().parent == Path(tempfile.gettempdir()).resolve())


def _check_upload(path: str) -> None:
    try:
        check_upload(path)
    except InputError as e:
        raise HTTPException(422, str(e)) from e


class KneeAIApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        lower_priority_if_background_task()  # training and scoring processes yield to interactive requests
        self.schema = KneeSchema.load(SCHEMA_FILE)
        self.model_config = model_config_from_conf(conf)
        model_dir = conf.get("model_dir") or os.path.join(app_dir, "model", MODEL)
        self.store = ModelStore(model_dir)
        self.refinement_store = ModelStore(refinement_model_dir(app_dir, conf))
        self.click_config = click_config_from_conf(conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="KneeAI",
            description="Knee MRI segmentation: bones, cartilages and menisci, learning from corrections",
            version="0.1.0",
            labels=self.schema.labels_for_monailabel,
        )

    def init_datastore(self):
        import_dicom_folders(self.studies)
        return KneeDatastore(self.studies, self.schema, extensions=["*.nii.gz", "*.nii", "*.nrrd"])

    def init_infers(self):
        self._segmentation = KneeSegmentation(
            self.store, self.schema, self.model_config, "Coarse-to-fine knee segmentation of the whole MRI"
        )
        # Scoring and the uncertainty strategy share the inference task's loaded model.
        self._uncertainty = TTAUncertaintyScoring(self._segmentation)
        # Clicks and scribbles share one cache of recently read images (a click never re-reads the volume).
        cache = ImageCache()
        return {
            MODEL: self._segmentation,
            REFINEMENT: KneeRefinement(self.refinement_store, self.schema, cache, "Refine one structure from clicks"),
            "knee_scribbles": KneeScribbles(self.schema, "Refine one structure from scribbles", cache),
        }

    def init_trainers(self):
        return {
            MODEL: KneeSegmentationTrainer(self.store, self.schema, self.model_config, "Train the knee model",
                                           fine_tune_overrides=fine_tune_overrides(self.conf)),
            REFINEMENT: KneeRefinementTrainer(self.refinement_store, self.schema, "Train the click refinement network",
                                              self.click_config),
        }

    def init_scoring_methods(self):
        return {"knee_uncertainty": self._uncertainty}

    def init_strategies(self):
        return {"random": RandomUnreserved(), "knee_uncertainty": MostUncertain(self._uncertainty)}

    def info(self) -> dict[str, Any]:
        meta = super().info()
        meta["knee_schema"] = self.schema.to_info()
        meta["model_version"] = self.store.promoted_version("untrained")
        return meta

    def infer(self, request, datastore=None):
        # An image is either a datastore id or a file the client just uploaded; a label only the latter.
        # MONAI Label lays the request's JSON params over the uploads' paths, so a client could name
        # any path on the server here: only the endpoint's own temporary files pass.
        image = request.get("image")
        if isinstance(image, str):
            if is_upload(image):
                _check_upload(image)
            else:
                check_id(image)
                if not self.datastore().get_image_uri(image):
                    raise HTTPException(404, f"Image {image!r} not found")
        label = request.get("label")
        if label is not None:
            if not (isinstance(label, str) and is_upload(label)):
                raise HTTPException(422, "'label' must be the label file sent with the request, not a path or id")
            _check_upload(label)
        return super().infer(request, datastore)

