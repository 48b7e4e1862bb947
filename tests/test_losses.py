"""OHEM cross-entropy: the mean over hard pixels, at least min_kept of them, void never counted."""

import torch
import torch.nn.functional as F

from vitdense import SegmentationTask
from vitdense.losses import ohem_cross_entropy


def test_ohem_keeps_hard_pixels_and_at_least_min_kept() -> None:
    target = torch.tensor([[[0, 1, 1, 255]]])  # (1, 1, 4); last pixel void
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 0] = 5.0  # pixel 0: confident and right (easy)
    logits[0, 0, 0, 1] = 5.0  # pixel 1: confident and wrong (hard)
    logits[0, 1, 0, 2] = 1.0  # pixel 2: right, p = 0.73 (easy at 0.7)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0]
    loss = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=1)
    torch.testing.assert_close(loss, per_pixel[1])
    two = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=2)  # the two hardest
    torch.testing.assert_close(two, (per_pixel[1] + per_pixel[2]) / 2)
    everything = ohem_cross_entropy(logits, target, ignore_index=255, thresh=1.0, min_kept=1)
    torch.testing.assert_close(everything, F.cross_entropy(logits, target, ignore_index=255))


def test_ohem_trains_the_main_head_only_in_training() -> None:
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
    ohem = {"ohem_thresh": 0.7, "ohem_min_kept": 10}
    task = SegmentationTask(backbone=backbone, num_classes=3, head={"channels": 8}, loss=ohem)
    logits, mask = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    assert task.compute_loss(logits, mask) == F.cross_entropy(logits, mask)
    assert task.compute_loss(logits, mask, ohem=True) >= F.cross_entropy(logits, mask)  # hard pixels weigh more


def test_class_weights_from_the_datamodule_when_fitting(tmp_path) -> None:
    import yaml
    from test_cli import write_folder_dataset

    from vitdense.cli import main

    root = write_folder_dataset(tmp_path / "data")
    backbone = {
        "name": "vit_tiny_patch16_224",
        "img_size": 32,
        "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
    }
    cfg = {"model": {"class_path": "SegmentationTask", "init_args": {
               "backbone": backbone, "head": {"channels": 8}, "loss": {"class_weights": "sqrt_median_frequency"}}},
           "data": {"class_path": "SegmentationFolderDataModule",
                    "init_args": {"root": str(root), "crop_size": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "fast_dev_run": True, "default_root_dir": str(tmp_path),
                       "enable_progress_bar": False}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(tmp_path / "c.yaml")])
    weights = cli.model.ce_class_weights
    assert weights is not None and weights.shape == (3,) and torch.isfinite(weights).all() and (weights > 0).all()


def test_lovasz_term_adds_smp_lovasz_over_labelled_pixels_only() -> None:
    import segmentation_models_pytorch as smp

    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
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
