"""The click-guided refinement network and the configuration that travels with its weights.

Input channels: normalised image, current mask of the structure, positive-click map, negative-click
map (all at the image's NATIVE resolution, so thin cartilage is never resampled away); output: one
logit per voxel for the structure. One network serves every structure: which one is being refined is
carried by the current mask and the clicks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from monai.networks.nets import SegResNet

IN_CHANNELS = 4  # image, current mask, positive clicks, negative clicks
SIZE_MULTIPLE = 8  # SegResNet halves three times


@dataclass(frozen=True)
class ClickNetConfig:
    init_filters: int = 16
    patch: tuple[int, int, int] = (32, 96, 96)  # training crop, voxels (z, y, x) at native resolution
    click_sigma_mm: float = 3.0
    # How the network's proposal is written back (lib/interactive/refine.Refiner); the trainer's
    # validation, and so promotion, measures the network with these. Chosen on the validation knees
    # (BENCHMARKS.md, Interactive): the network is trusted within 20 mm of the click, not only where its
    # change touches the click (an automatic result's boundary is wrong along a whole structure), and
    # a click moves the boundary one way only (so a click never undoes good parts elsewhere).
    radius_mm: float = 20.0  # a click may change voxels up to this far from it
    keep_connected: bool = False
    follow_click_sign: bool = True

    # What the weights depend on; the rest may change between fine-tuning runs.
    ARCHITECTURE = ("init_filters", "click_sigma_mm")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClickNetConfig":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**{**LEGACY_WRITE_BACK, **values})


# A network saved before its configuration said how to write back was validated (and promoted) with this.
LEGACY_WRITE_BACK = {"radius_mm": 12.0, "keep_connected": True, "follow_click_sign": False}


def build_click_network(config: ClickNetConfig) -> torch.nn.Module:
    return SegResNet(spatial_dims=3, in_channels=IN_CHANNELS, out_channels=1, init_filters=config.init_filters,
                     blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))


def click_state(config: ClickNetConfig, network: torch.nn.Module) -> dict:
    return {"config": config.to_dict(), "network": {k: t.detach().cpu() for k, t in network.state_dict().items()}}


def click_network_from_state(state: dict) -> tuple[ClickNetConfig, torch.nn.Module]:
    config = ClickNetConfig.from_dict(state["config"])
    network = build_click_network(config)
    network.load_state_dict(state["network"])
    return config, network
