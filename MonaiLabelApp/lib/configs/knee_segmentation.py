"""``--conf`` options of the KneeAI app (documented in README.md) and the model configuration they make."""

from __future__ import annotations

import math

from lib.networks import SIZE_MULTIPLE, KneeModelConfig

# name -> (KneeModelConfig field or None, help). Values arrive as strings from the command line.
CONF_OPTIONS = {
    "model_dir": (None, "Folder of model versions (default: MonaiLabelApp/model/knee_segmentation)"),
    "coarse_spacing": ("coarse_spacing", "mm, 'x,y,z': the whole-volume pass that finds the joint (1.5,1.5,1.5)"),
    "fine_spacing": ("fine_spacing", "mm, 'x,y,z': the joint crop's pass, fine enough for cartilage (0.6,0.6,0.6)"),
    "coarse_filters": ("coarse_filters", "first-layer channels of the coarse SegResNet (8)"),
    "fine_filters": ("fine_filters", "first-layer channels of the fine SegResNet (16)"),
    "roi_margin_mm": ("roi_margin_mm", "margin around the joint the coarse pass finds, mm (10)"),
    "max_roi_mm": ("max_roi_mm", "largest joint crop per axis, mm (100)"),
    "coarse_patch": ("coarse_patch", "training crop of the coarse network, voxels 'z,y,x' (96,96,96)"),
    "fine_patch": ("fine_patch", "training crop of the fine network, voxels 'z,y,x' (96,96,96)"),
}


# Options a fine-tune takes from the server's --conf: they shape the joint box and the training crops,
# not the weights. Spacings and filter counts stay the promoted model's, since its weights were
# learned with them.
FINE_TUNE_OPTIONS = ("roi_margin_mm", "max_roi_mm", "coarse_patch", "fine_patch")


def _parse(value: str, like):
    if isinstance(like, tuple):
        parts = [p for p in str(value).replace(" ", "").split(",") if p]
        if len(parts) != 3:
            raise ValueError(f"expected three comma-separated numbers, got {value!r}")
        return tuple(_number(p, value, isinstance(like[0], int)) for p in parts)
    return _number(value, value, isinstance(like, int))


def _number(text, value, integer: bool):
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or (integer and not number.is_integer()):
        raise ValueError(f"expected {'whole' if integer else 'finite'} numbers, got {value!r}")
    return int(number) if integer else number


def _check(name: str, value) -> None:
    """Values the networks cannot work with stop the server (or the training command) at once, not at the
    first training step after minutes of synthesis: no voxel, spacing or filter count below one, and training
    crops that SegResNet's three halvings divide (multiples of 8)."""
    values = value if isinstance(value, tuple) else (value,)
    if name == "roi_margin_mm":
        if values[0] < 0:
            raise ValueError(f"must be 0 or more (mm), got {value}")
    elif any(v <= 0 for v in values) or (name.endswith("_filters") and value < 1):
        raise ValueError(f"must be more than 0, got {value}")
    if name.endswith("_patch") and any(v % SIZE_MULTIPLE for v in values):
        raise ValueError(f"must be multiples of {SIZE_MULTIPLE} voxels (the network halves a crop three "
                         f"times), got {value}")


def model_config_from_conf(conf: dict) -> KneeModelConfig:
    defaults = KneeModelConfig()
    values = {}
    for name, (field_name, _) in CONF_OPTIONS.items():
        if field_name and name in conf:
            try:
                values[field_name] = _parse(conf[name], getattr(defaults, field_name))
                _check(name, values[field_name])
            except ValueError as e:
                raise ValueError(f"--conf {name}: {e}") from e
    return KneeModelConfig(**values)


def fine_tune_overrides(conf: dict) -> dict:
    """KneeModelConfig fields that ``conf`` sets explicitly among FINE_TUNE_OPTIONS (parsed values)."""
    config = model_config_from_conf(conf)
    return {name: getattr(config, CONF_OPTIONS[name][0]) for name in FINE_TUNE_OPTIONS if name in conf}
