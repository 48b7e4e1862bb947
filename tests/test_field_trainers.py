"""The helpers of benchmarks/field_trainers.py that need neither torchgeo nor terratorch: the confusion-matrix scores,
the crops and whole images it serves, and the scorer that reads a task's own validation logits through a hook."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import field_trainers as ft


def test_confusion_leaves_out_void_and_scores_present_classes() -> None:
    logits = torch.zeros(1, 4, 2, 3)
    pred = torch.tensor([[0, 0, 1], [1, 1, 0]])  # class 2 never predicted, 3 never either
    logits.scatter_(1, pred[None, None], 1.0)
    mask = torch.tensor([[[0, 0, 1], [1, 255, 2]]])  # 255 void: its prediction is not counted
    cm = ft.confusion(logits, mask, num_classes=4, void=255)
    assert cm.tolist() == [[2, 0, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    s = ft.scores(cm)
    # class 0: 2 right, 1 false positive (a 2); class 1: 2 right; class 2: missed; class 3 absent from ground truth
    # and predictions: left out of the mean
    assert s["iou"] == [pytest.approx(2 / 3), pytest.approx(1.0), 0.0, None]
    assert s["mIoU"] == pytest.approx((2 / 3 + 1 + 0) / 3) and s["pixel_acc"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="neither a class"):
        ft.confusion(logits, torch.full((1, 2, 3), 7), num_classes=4, void=255)


def test_crops_pad_small_images_and_eval_pads_to_a_multiple() -> None:
    image, mask = np.full((20, 30, 3), 255, np.uint8), np.ones((20, 30), np.uint8)
    crops = ft.TrainCrops([(image, mask)], crop=32, void=255, mean=(0.0,) * 3, std=(255.0,) * 3, seed=0)
    item = crops[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
    assert set(item["mask"].unique().tolist()) == {1, 255} and (item["mask"] == 1).sum() == 20 * 30
    whole = ft.WholeImages([(image, mask)], void=255, mean=(0.0,) * 3, std=(255.0,) * 3, pad=16)[0]
    assert (
        whole["image"].shape == (3, 32, 32)
        and (whole["mask"][20:] == 255).all()
        and (whole["mask"][:, 30:] == 255).all()
    )
    assert whole["image"][:, :20, :30].eq(1).all() and whole["image"][:, 20:].eq(0).all()
    assert ft.WholeImages([(image, mask)], 255, (0.0,) * 3, (1.0,) * 3, pad=0)[0]["mask"].shape == (20, 30)


class _Fixed(LightningModule):
    """A task whose forward predicts class 1 everywhere, returned as a tensor or, like terratorch, in ``.output``."""

    def __init__(self, wrapped: bool) -> None:
        super().__init__()
        self.wrapped, self.w = wrapped, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> object:
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        logits[:, 1] = 1
        return SimpleNamespace(output=logits) if self.wrapped else logits

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self(batch["image"])


@pytest.mark.parametrize("wrapped", [False, True])
def test_scorer_reads_the_tasks_own_validation_logits(wrapped: bool) -> None:
    items = [{"image": torch.zeros(3, 4, 4), "mask": torch.tensor([[0, 1, 1, 255]] * 4)} for _ in range(2)]
    scorer = ft.ConfusionScorer(num_classes=2, void=255)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[scorer])  # fmt: skip
    trainer.validate(_Fixed(wrapped), dataloaders=DataLoader(items, batch_size=1), verbose=False)
    assert scorer.images == {"val": 2}
    assert scorer.cm["val"].tolist() == [[0, 8], [0, 16]]  # 8 class-0 pixels called 1, 16 right, void left out
    assert ft.field_row_name("torchgeo dpt-vit_tiny", 0) == "field: torchgeo dpt-vit_tiny"
    assert ft.field_row_name("torchgeo dpt-vit_tiny", 2) == "field: torchgeo dpt-vit_tiny, seed=2"
