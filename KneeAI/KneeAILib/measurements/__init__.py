"""Knee measurements on any knee label map: cartilage thickness maps, regional values, change
between visits, meshes and a report. numpy + SimpleITK only (runs in Slicer's own Python)."""

from .errors import (CartilageNotOnBoneError, GeometryError, MeasurementError, MissingBoneError,
                     NoCartilageError, UnknownLabelError)
from .labelmap import LabelMap
from .longitudinal import VisitComparison, compare_visits
from .measure import KneeMeasurement, measure_knee
from .thickness import PlateThickness, plate_thickness

__all__ = ["CartilageNotOnBoneError", "GeometryError", "KneeMeasurement", "LabelMap", "MeasurementError",
           "MissingBoneError", "NoCartilageError", "PlateThickness", "UnknownLabelError", "VisitComparison",
           "compare_visits", "measure_knee", "plate_thickness"]
