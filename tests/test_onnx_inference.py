"""The ONNX runner applies a segmentation model's inference settings (windows, flip, scales) as the task does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import VIT_D2_W32
from vitdense import SegmentationTask
from vitdense.deploy.graph import onnx_metadata
from vitdense.deploy.onnx_runner import segmentation_logits
from vitdense.tasks.inference import INFERENCE_DEFAULTS, infer_logits

MIX = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


def torch_forward(x: torch.Tensor) -> torch.Tensor:
    """A stand-in model whose logits depend on the whole input it sees (its mean), so windows change them."""
    mixed = torch.einsum("kc,nchw->nkhw", torch.from_numpy(MIX), x)
    return mixed + 3 * mixed.mean((2, 3), keepdim=True) + torch.linspace(0, 1, x.shape[-1])


def numpy_forward(x: np.ndarray) -> np.ndarray:
    return torch_forward(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@pytest.mark.parametrize(
    "settings",
    [
        {"mode": "slide", "crop": [16, 20], "stride": [10, 12]},
        {"mode": "slide", "crop": [64, 64], "stride": [32, 32]},  # larger than the image: one window
        {"flip": True},
        {"scales": [0.75, 1.0, 1.3]},
        {"mode": "slide", "crop": [16, 16], "stride": [11, 11], "flip": True, "scales": [0.5, 1.25]},
    ],
)
def test_numpy_inference_matches_the_tasks(settings: dict) -> None:
    cfg = {**INFERENCE_DEFAULTS, **settings}
    images = torch.rand(2, 3, 37, 45)
    expected = infer_logits(torch_forward, images, cfg, (16, 16)).numpy()
    got = segmentation_logits(numpy_forward, images.numpy(), cfg)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    one_window = settings.get("crop") == [64, 64]  # the image itself: the whole-image logits
    assert (np.abs(expected - torch_forward(images).numpy()).max() > 1e-3) != one_window


def test_export_metadata_holds_the_resolved_windows() -> None:
    task = SegmentationTask(backbone=VIT_D2_W32, num_classes=3, img_size=48, head={"channels": 8},
                            inference={"mode": "slide", "flip": True})  # fmt: skip
    assert onnx_metadata(task)["inference"] == {"mode": "slide", "crop": [48, 48], "stride": [32, 32], "flip": True,
                                                "scales": [1.0]}  # fmt: skip
