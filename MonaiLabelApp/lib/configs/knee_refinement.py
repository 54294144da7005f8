"""``--conf`` options of the interactive refinement (click network) and where its versions live."""

from __future__ import annotations

import math
import os

from KneeAILib.refinement import REACH_MM

from lib.interactive.network import ClickNetConfig
from lib.networks import SIZE_MULTIPLE

REFINEMENT = "knee_refinement"
CONF_OPTIONS = ("refinement_model_dir", "refinement_filters", "refinement_patch",
                "refinement_reach_mm")  # read by this module


def refinement_model_dir(app_dir: str, conf: dict) -> str:
    """``refinement_model_dir``, else beside the segmentation model's folder (``<model_dir>_refinement``
    when ``model_dir`` is given, so servers with their own model folders never share one)."""
    if conf.get("refinement_model_dir"):
        return conf["refinement_model_dir"]
    if conf.get("model_dir"):
        return str(conf["model_dir"]).rstrip("/\\") + "_refinement"
    return os.path.join(app_dir, "model", REFINEMENT)


def click_config_from_conf(conf: dict) -> ClickNetConfig:
    """``refinement_filters`` (16), ``refinement_patch`` ('z,y,x' voxels, 32,96,96) and
    ``refinement_reach_mm`` (how far from a click the network may change voxels; the cost of an
    update grows with its cube, so a CPU-only server may want less; at most the region the client sends
    around a click, KneeAILib.refinement.REACH_MM: a farther reach would be cut off there without a
    word). They apply to networks this server trains; a network keeps the settings it was validated with."""
    defaults = ClickNetConfig()
    values = {}
    if "refinement_filters" in conf:
        values["init_filters"] = _whole(conf["refinement_filters"], "refinement_filters", "a whole number of 1 or more")
        if values["init_filters"] < 1:
            raise ValueError(f"--conf refinement_filters: expected 1 or more, got {conf['refinement_filters']!r}")
    if "refinement_patch" in conf:
        expected = f"'z,y,x', positive multiples of {SIZE_MULTIPLE} voxels (the network halves a crop three times)"
        parts = [_whole(p, "refinement_patch", expected) for p in str(conf["refinement_patch"]).split(",") if p.strip()]
        if len(parts) != 3 or any(p < 1 or p % SIZE_MULTIPLE for p in parts):
            raise ValueError(f"--conf refinement_patch: expected {expected}, got {conf['refinement_patch']!r}")
        values["patch"] = tuple(parts)
    if "refinement_reach_mm" in conf:
        try:
            reach = float(conf["refinement_reach_mm"])
        except ValueError:
            reach = math.nan  # refused below, with the range
        if not 1.0 <= reach <= REACH_MM:
            raise ValueError(f"--conf refinement_reach_mm: expected 1-{REACH_MM:g} (mm; the client sends the "
                             f"region within {REACH_MM:g} mm of a click), got {conf['refinement_reach_mm']!r}")
        values["radius_mm"] = reach
    return ClickNetConfig(**{**defaults.to_dict(), **values})


def _whole(text, name: str, expected: str) -> int:
    try:
        number = float(text)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():  # NaN and infinity too
        raise ValueError(f"--conf {name}: expected {expected}, got {text!r}")
    return int(number)
