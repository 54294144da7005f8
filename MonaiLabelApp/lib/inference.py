"""One network over one volume, as every inference path of the server runs it (the segmenter's two
stages and the click network): in one pass when the volume is small enough, in overlapping windows
otherwise, with the fastest precision the hardware computes natively (lib/precision.py)."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from lib.precision import autocast, fast_layout


def predict_logits(network: torch.nn.Module, volume: np.ndarray, patch: tuple[int, int, int],
                   single_pass_voxels: int, device: torch.device, size_multiple: int) -> torch.Tensor:
    """Float32 logits (C_out, z, y, x) for ``volume`` (C_in, z, y, x). One pass over the whole
    volume, padded to ``size_multiple``, when that holds at most ``single_pass_voxels``; else windows
    of ``patch``."""
    whole = tuple(int(np.ceil(s / size_multiple) * size_multiple) for s in volume.shape[1:])
    roi = whole if int(np.prod(whole)) <= single_pass_voxels else patch
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None].to(device)
    with torch.inference_mode(), autocast(device):
        logits = sliding_window_inference(x, roi_size=roi, sw_batch_size=1, overlap=0.25, mode="gaussian",
                                          predictor=lambda window: network(fast_layout(window)))
    return logits[0].float()
