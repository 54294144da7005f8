"""Echo agreement (known answers), the PNG writer (decoded back), and overlay orientation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import SimpleITK as sitk
from kneeai_testing import SHARED_DATA, require

from KneeAILib.png import encode_png
from KneeAILib.schema import KneeSchema
from lib.evaluation.agreement import mean_agreement_dice, prediction_agreement
from lib.evaluation.label_maps import read_knee_labels, resample_labels
from lib.evaluation.metrics import EMPTY_BOTH
from lib.evaluation.overlays import colour_table, sagittal_panels
from lib.synthesis import make_knee_phantom

SCHEMA = KneeSchema.load()
TEN_CLASS = SHARED_DATA / "labels" / "oai_dess_10class.nrrd"


def decode_png(data: bytes) -> np.ndarray:
    """A PNG decoder for what encode_png writes (8-bit, filter 0), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = header[:4]
    channels = 3 if colour_type == 2 else 1
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    assert depth == 8 and not rows[:, 0].any()
    return rows[:, 1:].reshape((height, width, channels) if channels == 3 else (height, width))


def test_png_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(rgb)), rgb)
    grey = rgb[:, :, 0].copy()
    assert np.array_equal(decode_png(encode_png(grey)), grey)
    with pytest.raises(ValueError):
        encode_png(rgb.astype(np.float32))


@pytest.fixture(scope="module")
def ten_class_labels() -> sitk.Image:
    # 1 mm keeps every structure (menisci, fibula) and takes a fraction of a second.
    return resample_labels(read_knee_labels(require(TEN_CLASS), "oai_dess_10class"), 1.0)


def test_agreement_of_a_label_map_with_itself_is_exactly_one(ten_class_labels):
    agreement = prediction_agreement(ten_class_labels, ten_class_labels, SCHEMA)
    for s in SCHEMA.structures:  # the 10-class map has all ten structures
        row = agreement[s.key]
        assert row["dice"] == 1.0 and row["hd95_mm"] == 0.0 and row["asd_mm"] == 0.0
        assert row["volume_first_ml"] == row["volume_second_ml"] > 0
    assert mean_agreement_dice(agreement, [s.key for s in SCHEMA.structures]) == 1.0


def test_agreement_counts_a_structure_seen_on_one_side_only_as_zero(ten_class_labels):
    reference = sitk.GetArrayFromImage(ten_class_labels)
    second = reference.copy()
    second[second == 9] = 0  # the second "echo" misses the medial meniscus,
    second[second == 1] = 0  # misses the femur,
    tibia = reference == 2
    second[tibia] = 0
    second[:, 2:, :][tibia[:, :-2, :]] = 2  # and sees the tibia 2 voxels (2 mm) away
    image = sitk.GetImageFromArray(second)
    image.CopyInformation(ten_class_labels)
    agreement = prediction_agreement(ten_class_labels, image, SCHEMA)
    assert agreement["medial_meniscus"]["dice"] == 0.0 and agreement["femur"]["dice"] == 0.0
    assert agreement["medial_meniscus"]["status"] != EMPTY_BOTH
    assert 0.5 < agreement["tibia"]["dice"] < 1.0 and agreement["tibia"]["hd95_mm"] >= 1.0
    assert agreement["lateral_meniscus"]["dice"] == 1.0


def _outline_centroid(panel: np.ndarray, colour) -> tuple[float, float]:
    rows, cols = np.nonzero(np.all(panel == np.asarray(colour, np.uint8), axis=2))
    assert rows.size, f"colour {colour} not drawn"
    return float(rows.mean()), float(cols.mean())


@pytest.mark.parametrize("source", ["phantom_right", "phantom_left", "oai_dess_10class"])
def test_overlay_shows_superior_up_and_anterior_left(source, ten_class_labels):
    if source == "oai_dess_10class":
        labels = ten_class_labels  # LPS, oblique: the file's index axes are not the world axes
    else:
        labels = make_knee_phantom(3, side=source.split("_")[1])  # RAS direction
    image = sitk.Cast(labels, sitk.sitkFloat32)
    picture = sagittal_panels(image, [labels], SCHEMA, fractions=(0.5,))
    panel = picture[:, picture.shape[1] - (picture.shape[1] - 4) // 2:]  # the right panel: the overlay
    table = colour_table(SCHEMA)
    femur, tibia, patella = (_outline_centroid(panel, table[v]) for v in (1, 2, 3))
    assert femur[0] < tibia[0]  # femur above tibia
    assert patella[1] < femur[1]  # patella in front: anterior is left
    # Pixels are square in mm: the panel's aspect ratio is the field of view's.
    assert picture.shape[0] >= 256
