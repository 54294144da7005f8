"""Typed errors for knee measurements: each says what is wrong with the input and what to do about it."""

from __future__ import annotations


class MeasurementError(ValueError):
    """Base class: a label map (or pair of visits) that cannot be measured as given."""


class UnknownLabelError(MeasurementError):
    """The label map holds values that the chosen label convention does not define."""


class NoCartilageError(MeasurementError):
    """The label map has no cartilage at all (or not the plate that was asked for)."""


class CartilageNotOnBoneError(MeasurementError):
    """A cartilage plate does not touch its bone, so no bone-cartilage interface exists to measure from."""


class MissingBoneError(MeasurementError):
    """A bone needed for the knee's coordinate frame (femur, tibia) is absent."""


class GeometryError(MeasurementError):
    """The image geometry is unusable (e.g. a 2D image, zero spacing)."""
