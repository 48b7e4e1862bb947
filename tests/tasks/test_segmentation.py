"""SegmentationTask on every backbone family (shapes at any input size, gradients, pyramid strides), mIoU, losses."""

import pytest
import torch
import torch.nn.functional as F

from tests.tiny import FAMILIES, PATCH8_VIT_D2, VIT_D2_W32, tiny
from vitdense import SegmentationTask
from vitdense.tasks.segmentation import segmentation_scores


def tiny_task(name: str, num_classes: int = 5, **kwargs) -> SegmentationTask:
    return SegmentationTask(
        backbone=tiny(name), num_classes=num_classes, head={"channels": 32, "aux_channels": 16}, **kwargs
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_segmentation_shapes_and_gradients(name: str) -> None:
    task = tiny_task(name)
    task.train()
    logits, aux = task.forward_train(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 5, 224, 224)
    assert aux is not None and aux.shape == (2, 5, 224, 224)
    loss = task.compute_loss(logits, torch.randint(0, 5, (2, 224, 224))) + task.compute_loss(
        aux, torch.randint(0, 5, (2, 224, 224))
    )
    loss.backward()
    for module in (task.backbone, task.neck, task.decode_head, task.auxiliary_head):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(module).__name__
    assert any(g.abs().sum() > 0 for g in (p.grad for p in task.backbone.parameters()))


@pytest.mark.parametrize("name", FAMILIES)
def test_any_input_size_is_padded_and_cropped_back(name: str) -> None:
    task = tiny_task(name).eval()
    with torch.no_grad():
        assert task(torch.rand(1, 3, 256, 320)).shape == (1, 5, 256, 320)
        # Sides that are not multiples of the patch / window / stage stride.
        assert task(torch.rand(1, 3, 97, 150)).shape == (1, 5, 97, 150)


def test_batch_of_one_trains() -> None:
    """A single-image batch through the 1x1 pooling branch must not hit BatchNorm's one-value error."""
    task = tiny_task("vit_tiny_patch16_224").train()
    loss = task.compute_loss(task(torch.rand(1, 3, 64, 64)), torch.zeros(1, 64, 64, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_full_size_families_acceptance(name: str) -> None:
    """The exact models named in the acceptance list map (1,3,256,320) to (1,5,256,320)."""
    task = SegmentationTask(backbone=name, num_classes=5, pretrained=False).eval()
    with torch.no_grad():
        assert task(torch.rand(1, 3, 256, 320)).shape == (1, 5, 256, 320)


def test_pyramid_strides() -> None:
    vit = tiny_task("vit_tiny_patch16_224")
    swin = tiny_task("swin_tiny_patch4_window7_224")
    hybrid = tiny_task("vit_tiny_r_s16_p8_224")
    assert vit.backbone.strides == [16] * 4 and vit.neck.strides == [4, 8, 16, 32]
    assert swin.backbone.strides == [4, 8, 16, 32] and swin.neck.strides == [4, 8, 16, 32]
    assert hybrid.backbone.strides == [32] * 4 and hybrid.neck.strides == [4, 8, 16, 32]
    feats = vit.neck(vit.backbone(torch.rand(1, 3, 64, 64)))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_miou_hand_computed() -> None:
    """3 classes + ignore 255; class 2 is absent from both prediction and target and is left out of the mean."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    target = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 0]])  # the pixel predicted 2 is ignored
    # class 0: tp=2, fp=1 (pred 0 at target 1), fn=1 (target 0 pred 1) -> IoU 2/4
    # class 1: tp=3, fp=1, fn=1 -> IoU 3/5
    metric = MulticlassConfusionMatrix(3, ignore_index=255)
    metric.update(pred[:1], target[:1])  # accumulated over two "batches"
    metric.update(pred[1:], target[1:])
    scores = segmentation_scores(metric.compute())
    assert scores["mIoU"].item() == pytest.approx((2 / 4 + 3 / 5) / 2)
    assert torch.isnan(scores["IoU"][2])
    assert scores["pixel_acc"].item() == pytest.approx(5 / 7)
    assert scores["mDice"].item() == pytest.approx((4 / 6 + 6 / 8) / 2)


def test_ohem_trains_the_main_head_only_in_training() -> None:
    backbone = VIT_D2_W32
    ohem = {"ohem_thresh": 0.7, "ohem_min_kept": 10}
    task = SegmentationTask(backbone=backbone, num_classes=3, head={"channels": 8}, loss=ohem)
    logits, mask = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    torch.testing.assert_close(task.compute_loss(logits, mask), F.cross_entropy(logits, mask))
    assert task.compute_loss(logits, mask, ohem=True) >= F.cross_entropy(logits, mask)  # hard pixels weigh more


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_class_weights_from_the_datamodule_when_fitting(ema_decay, tmp_path) -> None:
    """The weights are set in setup("fit"), after the EMA callback copied the model: no state of the model (they
    once were a buffer, and the EMA's copy then lacked it and failed on its first update)."""
    import yaml

    from tests.fake_data import write_folder_dataset
    from vitdense.cli.entry import main

    root = write_folder_dataset(tmp_path / "data")
    backbone = PATCH8_VIT_D2
    cfg = {"model": {"class_path": "SegmentationTask", "init_args": {
               "backbone": backbone, "head": {"channels": 8}, "loss": {"class_weights": "sqrt_median_frequency"},
               "ema_decay": ema_decay}},
           "data": {"class_path": "SegmentationFolderDataModule",
                    "init_args": {"root": str(root), "crop_size": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "fast_dev_run": True, "default_root_dir": str(tmp_path),
                       "enable_progress_bar": False}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(tmp_path / "c.yaml")])
    weights = cli.model.ce_class_weights
    assert weights is not None and weights.shape == (3,) and torch.isfinite(weights).all() and (weights > 0).all()
    assert "ce_class_weights" not in dict(cli.model.named_buffers())


def test_lovasz_term_adds_smp_lovasz_over_labelled_pixels_only() -> None:
    import segmentation_models_pytorch as smp

    backbone = VIT_D2_W32
    task = SegmentationTask(backbone=backbone, num_classes=3, head={"channels": 8}, loss={"lovasz_weight": 0.5})
    torch.manual_seed(0)
    logits, mask = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    mask[:, :2] = 255  # void rows
    lovasz = smp.losses.LovaszLoss("multiclass", ignore_index=255)(logits, mask)
    expected = F.cross_entropy(logits, mask, ignore_index=255) + 0.5 * lovasz
    torch.testing.assert_close(task.compute_loss(logits, mask), expected)
    # Void pixels change nothing: other scores there give the same loss.
    noisy = logits.clone()
    noisy[:, :, :2] = torch.randn_like(noisy[:, :, :2]) * 10
    torch.testing.assert_close(task.compute_loss(noisy, mask), expected)


def test_class_weights_from_the_masks_go_with_the_checkpoint(tmp_path) -> None:
    """validate from a run's checkpoint computes the val loss fit logged: the weights derived from the training masks
    in setup("fit") are saved with the checkpoint and used on every stage."""
    from lightning.pytorch import Trainer

    from tests.fake_data import write_folder_dataset
    from vitdense.data import SegmentationFolderDataModule

    root = write_folder_dataset(tmp_path / "data")
    data = SegmentationFolderDataModule(root=str(root), crop_size=32, batch_size=2)
    loss = {"class_weights": "median_frequency"}
    task = SegmentationTask(backbone=PATCH8_VIT_D2, num_classes=3, img_size=32, head={"channels": 8}, loss=loss)
    args = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = Trainer(max_epochs=1, default_root_dir=str(tmp_path), **args)
    trainer.fit(task, data)
    fit_loss = float(trainer.callback_metrics["val/loss"])
    assert task.ce_class_weights is not None and not torch.allclose(task.ce_class_weights, torch.ones(3))
    ckpt = trainer.checkpoint_callback.best_model_path
    fresh = SegmentationTask(backbone=PATCH8_VIT_D2, num_classes=3, img_size=32, head={"channels": 8}, loss=loss)
    (result,) = Trainer(**args).validate(fresh, data, ckpt_path=ckpt)
    torch.testing.assert_close(fresh.ce_class_weights, task.ce_class_weights)
    assert result["val/loss"] == pytest.approx(fit_loss, abs=1e-6)
