"""Classification and detection tasks on every backbone family: shapes, finite losses, metrics."""

import pytest
import torch

from vitdense import ClassificationTask, DetectionTask

FAMILIES = [
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224",
    "vit_tiny_r_s16_p8_224",
]
TINY = {"depth": 4, "embed_dim": 64, "num_heads": 2}
TINY_SWIN = {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)}


def tiny(name: str) -> dict:
    return {"name": name, "model_kwargs": TINY_SWIN if name.startswith("swin") else TINY}


@pytest.mark.parametrize("name", FAMILIES)
def test_classification_shapes_and_loss(name: str) -> None:
    task = ClassificationTask(backbone=tiny(name), num_classes=7, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    assert task.eval()(torch.rand(2, 3, 224, 224)).shape == (2, 7)
    task.train()
    loss = task.shared_step({"image": torch.rand(4, 3, 96, 96), "label": torch.tensor([0, 1, 2, 6])}, "train")
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in task.parameters() if p.requires_grad)


def test_deit_distilled_averages_its_two_heads() -> None:
    task = ClassificationTask(backbone=tiny("deit_tiny_distilled_patch16_224"), num_classes=3).eval()
    model, head = task.backbone.model, task.head
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(task.backbone.normalize(x))
        expected = (head.fc(tokens[:, 0]) + head.fc_dist(tokens[:, 1])) / 2
        torch.testing.assert_close(task(x), expected)
    assert not torch.allclose(head.fc.weight, head.fc_dist.weight)  # two heads, not one


def test_classification_metrics_names() -> None:
    assert set(ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=7).metrics["val"].keys()) == {
        "acc", "acc_top5", "f1"
    }  # fmt: skip
    assert "acc_top5" not in ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=3).metrics["val"]


@pytest.mark.parametrize("name", FAMILIES)
def test_detection_eval_output_and_train_loss(name: str) -> None:
    task = DetectionTask(backbone=tiny(name), num_classes=3, head={"score_thresh": 0.0}).eval()
    with torch.no_grad():
        out = task(torch.rand(2, 3, 256, 320))
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[-1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"])
        if len(det["boxes"]):
            assert det["boxes"][:, 2].max() <= 320 and det["boxes"][:, 3].max() <= 256
            assert det["labels"].min() >= 0 and det["labels"].max() < 3
    task.train()
    batch = {
        "image": [torch.rand(3, 96, 128), torch.rand(3, 80, 64)],  # different sizes, one image without boxes
        "target": [
            {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        ],
    }
    loss = task.shared_step(batch, "train")
    assert torch.isfinite(loss)


@pytest.mark.parametrize("head", ["fcos", "faster_rcnn"])
def test_other_detection_heads(head: str) -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=2, head={"name": head, "score_thresh": 0.0})
    batch = {"image": [torch.rand(3, 64, 64)], "target": [{"boxes": torch.tensor([[4.0, 4, 40, 40]]),
                                                           "labels": torch.tensor([1])}]}  # fmt: skip
    assert torch.isfinite(task.train().shared_step(batch, "train"))
    with torch.no_grad():
        (det,) = task.eval()(torch.rand(1, 3, 64, 64))
    assert det["labels"].numel() == 0 or det["labels"].max() < 2


def test_vitdet_pyramid_from_last_block() -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=1)
    assert task.backbone.out_indices == [3]
    assert task.detector.backbone.strides == [8, 16, 32, 64, 128]  # RetinaNet's P3-P7
    sizes = task.detector.anchor_generator.sizes
    assert sizes[0][0] == 32 and max(sizes[-1]) == 812  # 4 x stride x 2^(k/3), as in the RetinaNet paper
    rcnn = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=1, head={"name": "faster_rcnn"})
    assert rcnn.detector.backbone.strides == [4, 8, 16, 32, 64]  # RPN on P2-P6
    assert rcnn.detector.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]  # RoIs from P2-P5 (ViTDet)


@pytest.mark.parametrize("head", ["retinanet", "fcos", "faster_rcnn"])
@pytest.mark.parametrize("name", [FAMILIES[0], FAMILIES[2]])
def test_detection_every_parameter_gets_a_gradient(name: str, head: str) -> None:
    """DDP stops on parameters that take no part in the loss: the body builds only the levels a detector reads."""
    task = DetectionTask(backbone=tiny(name), num_classes=2, head={"name": head}).train()
    batch = {"image": [torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
             "target": [{"boxes": torch.tensor([[4.0, 4, 40, 40]]), "labels": torch.tensor([1])},
                        {"boxes": torch.tensor([[10.0, 8, 30, 60]]), "labels": torch.tensor([0])}]}  # fmt: skip
    task.shared_step(batch, "train").backward()
    unused = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


def test_swin_detection_pyramid_normalises_each_stage() -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[2]), num_classes=1)
    neck = task.detector.backbone.neck
    assert task.backbone.strides == [8, 16, 32] and len(neck.norms) == 3  # C3-C5 feed RetinaNet's FPN


def test_map_perfect_and_missed_box() -> None:
    """mAP = 1 for perfect predictions; lower when a ground-truth box is missed (COCO definitions)."""
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=2)
    metric = task.metrics["val"]
    target = [{"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 100, 120]]), "labels": torch.tensor([0, 1])}]
    perfect = [{**target[0], "scores": torch.tensor([0.9, 0.8])}]
    metric.update(perfect, target)
    scores = task.compute_metrics(metric, "val")
    assert scores["val/mAP"].item() == pytest.approx(1.0)
    assert scores["val/mAP_50"].item() == pytest.approx(1.0) and scores["val/mAP_75"].item() == pytest.approx(1.0)
    metric.reset()
    missed = [{"boxes": target[0]["boxes"][:1], "labels": target[0]["labels"][:1], "scores": torch.tensor([0.9])}]
    metric.update(missed, target)
    assert task.compute_metrics(metric, "val")["val/mAP"].item() < 1.0


def test_classification_linear_probe_trains_the_head_at_its_own_lr() -> None:
    """freeze_backbone leaves the classifier trainable (it lives beside the backbone) and head_lr_mult reaches it."""
    task = ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=3, freeze_backbone=True,
                              optimizer={"lr": 1e-3, "head_lr_mult": 10.0})  # fmt: skip
    optimizer = task.configure_optimizers()["optimizer"]
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in task.head.parameters()}
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([1e-2] * len(optimizer.param_groups))
    full = ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=3, optimizer={"lr": 1e-3, "head_lr_mult": 10.0})
    names = {id(p): n for n, p in full.named_parameters()}
    lrs = {names[id(p)]: g["initial_lr"] for g in full.configure_optimizers()["optimizer"].param_groups
           for p in g["params"]}  # fmt: skip
    assert lrs["head.fc.weight"] == pytest.approx(1e-2) and lrs["backbone.model.blocks.0.attn.qkv.weight"] == 1e-3


def test_mixup_mixes_odd_batches_too() -> None:
    task = ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=4, mixup={"mixup_alpha": 0.8, "prob": 1.0},
                              label_smoothing=0.0)  # fmt: skip
    images, labels = torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0])
    mixed, soft = task._mix(images.clone(), labels)
    assert mixed.shape == images.shape and soft.shape == (5, 4)
    assert not torch.equal(mixed[:4], images[:4])  # mixed pairs
    torch.testing.assert_close(mixed[4], images[4])  # the odd one out keeps its image and its own label
    assert soft[4].tolist() == [1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(soft.sum(1), torch.ones(5))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_segmentation_on_a_vit_with_fewer_than_four_blocks(depth: int) -> None:
    from vitdense import SegmentationTask

    task = SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "model_kwargs": {**TINY, "depth": depth}},
                            num_classes=3, head={"channels": 16}).eval()  # fmt: skip
    assert len(task.backbone.out_indices) == 4
    with torch.no_grad():
        assert task(torch.rand(1, 3, 64, 48)).shape == (1, 3, 64, 48)
