"""The two networks of the coarse-to-fine knee model and the configuration that travels with them.

The coarse network sees the whole MRI at a coarse spacing and finds the joint; the fine network
segments a crop around the joint at a spacing fine enough for 2–3 mm cartilage. A checkpoint stores
its own configuration, so a model version always runs with the geometry it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from monai.networks.nets import SegResNet


@dataclass(frozen=True)
class KneeModelConfig:
    num_classes: int = 11  # background + schema values 1..10
    coarse_spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    fine_spacing: tuple[float, float, float] = (0.6, 0.6, 0.6)
    coarse_filters: int = 8
    fine_filters: int = 16
    # The fine crop: the joint found by the coarse pass, grown by a margin, at most this large.
    roi_margin_mm: float = 10.0
    max_roi_mm: float = 100.0  # at 0.6 mm: at most 167^3 voxels, ~2 GB in one pass
    # Training crop sizes (voxels); inference runs a crop in one pass up to single_pass_voxels.
    coarse_patch: tuple[int, int, int] = (96, 96, 96)
    fine_patch: tuple[int, int, int] = (96, 96, 96)
    single_pass_voxels: int = 5_000_000
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "KneeModelConfig":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


def build_network(init_filters: int, num_classes: int) -> torch.nn.Module:
    # SegResNet: residual encoder, light decoder; cheap enough for 2 CPU cores at these filter counts.
    return SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=num_classes,
        init_filters=init_filters,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    )


# SegResNet halves the resolution three times: inputs must be multiples of 8.
SIZE_MULTIPLE = 8


@dataclass
class KneeNetworks:
    config: KneeModelConfig
    coarse: torch.nn.Module
    fine: torch.nn.Module

    @classmethod
    def create(cls, config: KneeModelConfig, seed: int = 0) -> "KneeNetworks":
        torch.manual_seed(seed)
        return cls(
            config,
            build_network(config.coarse_filters, config.num_classes),
            build_network(config.fine_filters, config.num_classes),
        )

    def state(self) -> dict:
        return {"config": self.config.to_dict(), "coarse": self.coarse.state_dict(), "fine": self.fine.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> "KneeNetworks":
        nets = cls.create(KneeModelConfig.from_dict(state["config"]))
        nets.coarse.load_state_dict(state["coarse"])
        nets.fine.load_state_dict(state["fine"])
        return nets

    def to(self, device: torch.device) -> "KneeNetworks":
        self.coarse.to(device)
        self.fine.to(device)
        return self

    def eval(self) -> "KneeNetworks":
        self.coarse.eval()
        self.fine.eval()
        return self
