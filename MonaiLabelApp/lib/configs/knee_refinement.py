"""``--conf`` options of the interactive refinement (click network) and where its versions live."""

from __future__ import annotations

import os

from KneeAILib.refinement import REACH_MM

from lib.interactive.network import ClickNetConfig

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
        values["init_filters"] = int(conf["refinement_filters"])
    if "refinement_patch" in conf:
        parts = [int(p) for p in str(conf["refinement_patch"]).split(",") if p.strip()]
        if len(parts) != 3:
            raise ValueError(f"--conf refinement_patch: expected 'z,y,x', got {conf['refinement_patch']!r}")
        values["patch"] = tuple(parts)
    if "refinement_reach_mm" in conf:
        reach = float(conf["refinement_reach_mm"])
        if not 1.0 <= reach <= REACH_MM:
            raise ValueError(f"--conf refinement_reach_mm: expected 1-{REACH_MM:g} (mm; the client sends the "
                             f"region within {REACH_MM:g} mm of a click), got {conf['refinement_reach_mm']!r}")
        values["radius_mm"] = reach
    return ClickNetConfig(**{**defaults.to_dict(), **values})
