"""Which precision each device computes in (lib/precision.py), and that inference in bfloat16 still
answers float32 logits that agree with a float32 pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import SegResNet

from lib.inference import predict_logits
from lib.precision import autocast, cpu_has_native_bf16, describe, fast_layout, grad_scaler, reduced_dtype

CPU = torch.device("cpu")


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return SegResNet(spatial_dims=3, in_channels=2, out_channels=3, init_filters=8, blocks_down=(1, 1), blocks_up=(1,)).eval()


def test_gpu_computes_in_float16_for_inference_and_training():
    assert reduced_dtype(torch.device("cuda")) == torch.float16
    assert describe(torch.device("cuda")) == {"inference": "float16", "training": "float16"}


def test_cpu_float32_when_switched_off(monkeypatch):
    monkeypatch.setenv("KNEEAI_CPU_BF16", "0")
    assert reduced_dtype(CPU) is None
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
    x = torch.zeros(1, 2, 4, 8, 8)
    assert fast_layout(x).is_contiguous()  # left in its own layout
    assert not grad_scaler(CPU).is_enabled()
    assert describe(CPU) == {"inference": "float32", "training": "float32"}


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_cpu_with_native_bf16_computes_in_bfloat16(monkeypatch):
    monkeypatch.delenv("KNEEAI_CPU_BF16", raising=False)
    assert reduced_dtype(CPU) == torch.bfloat16
    with autocast(CPU):
        assert torch.nn.functional.conv3d(torch.ones(1, 1, 3, 3, 3), torch.ones(1, 1, 1, 1, 1)).dtype == torch.bfloat16
    assert fast_layout(torch.zeros(1, 2, 4, 8, 8)).is_contiguous(memory_format=torch.channels_last_3d)
    assert not grad_scaler(CPU).is_enabled()
    # Training on the CPU stays float32: bfloat16 backward passes gave non-finite gradients here.
    with autocast(CPU, training=True):
        assert not torch.is_autocast_enabled("cpu")
    assert describe(CPU) == {"inference": "bfloat16", "training": "float32"}


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_bfloat16_inference_agrees_with_float32(monkeypatch):
    network = small_network()
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(2, 20, 36, 36)).astype(np.float32)  # padded to 24x40x40 in one pass
    fast = predict_logits(network, volume, (16, 32, 32), 10**6, CPU, 8)
    monkeypatch.setenv("KNEEAI_CPU_BF16", "0")
    exact = predict_logits(network, volume, (16, 32, 32), 10**6, CPU, 8)
    assert fast.dtype == exact.dtype == torch.float32
    assert fast.shape == exact.shape == (3, 20, 36, 36)
    assert not torch.equal(fast, exact)  # bfloat16 did run
    scale = float(exact.abs().max())
    assert float((fast - exact).abs().max()) < 0.05 * scale
    agree = (fast.argmax(0) == exact.argmax(0)).float().mean()
    assert float(agree) > 0.97
