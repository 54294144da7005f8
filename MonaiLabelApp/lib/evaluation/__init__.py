"""Segmentation quality: per-structure Dice, HD95 and average surface distance in mm."""

from .metrics import StructureScore, dice, score_label_maps, score_masks, surface_distances

__all__ = ["StructureScore", "dice", "score_label_maps", "score_masks", "surface_distances"]
