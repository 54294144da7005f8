"""Synthetic knee data: procedural phantoms, MRI synthesis from label maps, the sample dataset.

    from lib.synthesis import make_knee_phantom, synthesize_image, synthesize_pair, load_label_map
    from lib.synthesis import generate_sample_dataset

Needs numpy, scipy, SimpleITK and ``KneeAILib.schema`` (the project's label schema); no torch.
"""

from .phantom import make_knee_phantom
from .sample_dataset import generate_sample_dataset
from .synthesize import deform_labels, draw_parameters, load_label_map, render, synthesize_image, synthesize_pair

__all__ = [
    "make_knee_phantom",
    "generate_sample_dataset",
    "synthesize_image",
    "synthesize_pair",
    "deform_labels",
    "draw_parameters",
    "render",
    "load_label_map",
]
