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
                                                "scales": [1.0], "keep_largest": []}  # fmt: skip


def test_runner_keeps_the_largest_region_of_the_classes_the_export_names() -> None:
    """``keep_largest`` goes into the file as class ids (names resolved), and ``OnnxModel.predict`` reshapes those
    classes as the task's val, test and predict do (``SegmentationTask.classes_of``)."""
    from vitdense.deploy.onnx_runner import OnnxModel

    task = SegmentationTask(backbone=VIT_D2_W32, num_classes=3, img_size=48, head={"channels": 8},
                            class_names=["bg", "lesion", "hair"], inference={"keep_largest": ["lesion"]})  # fmt: skip
    metadata = onnx_metadata(task)
    assert metadata["inference"]["keep_largest"] == [1]
    logits = np.zeros((2, 3, 20, 24), np.float32)
    logits[:, 1, 2:9, 2:9] = 2  # a large region of class 1 in each image ...
    logits[:, 1, 13:16, 15:18] = 2  # ... and a small one, whose next class is 2
    logits[:, 2, 13:16, 15:18] = 1
    runner = OnnxModel.__new__(OnnxModel)  # the runner without an onnxruntime session: its logits given
    runner.task, runner.metadata, runner.detects = "segmentation", metadata, False
    runner.logits = lambda images: logits  # type: ignore[method-assign]
    ids = runner.predict(np.zeros((2, 20, 24, 3), np.uint8))
    expected = task.classes_of(torch.from_numpy(logits)).numpy()
    assert (ids == expected).all() and (ids[:, 13:16, 15:18] == 2).all() and (ids[:, 2:9, 2:9] == 1).all()
    assert (logits.argmax(1)[:, 13:16, 15:18] == 1).all()  # without keep_largest the small region stays class 1
