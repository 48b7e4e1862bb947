"""ClassificationTask on every backbone family: shapes and finite losses, metrics, linear probe, mixup, flip TTA."""

import pytest
import torch

from tests.tiny import FAMILIES, VIT_D2_W32, tiny
from vitdense import ClassificationTask


@pytest.mark.parametrize("name", FAMILIES)
def test_classification_shapes_and_loss(name: str) -> None:
    task = ClassificationTask(backbone=tiny(name), num_classes=7, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    assert task.eval()(torch.rand(2, 3, 224, 224)).shape == (2, 7)
    task.train()
    loss = task.shared_step({"image": torch.rand(4, 3, 96, 96), "label": torch.tensor([0, 1, 2, 6])}, "train")
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in task.parameters() if p.requires_grad)


def test_classification_metrics_names() -> None:
    assert set(ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=7).metrics["val"].keys()) == {
        "acc", "acc_top5", "f1"
    }  # fmt: skip
    assert "acc_top5" not in ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=3).metrics["val"]


def test_classification_f1_is_not_computed_from_top5_counts() -> None:
    """torchmetrics' compute groups merged macro F1 with top-5 accuracy when the first batch was all right at top-1
    (as when a val folder is read class by class): F1 then came from the top-5 counts, far above the true value."""
    from torchmetrics.classification import MulticlassF1Score

    task = ClassificationTask(backbone=tiny(FAMILIES[0]), num_classes=10)
    metrics, f1 = task.metrics["test"], MulticlassF1Score(10, average="macro")
    generator = torch.Generator().manual_seed(0)
    for batch in range(4):
        labels = torch.randint(0, 10, (16,), generator=generator)
        logits = torch.randn(16, 10, generator=generator)
        if batch == 0:
            logits[torch.arange(16), labels] += 10  # the first batch all right
        metrics.update(logits, labels)
        f1.update(logits, labels)
    assert float(metrics.compute()["f1"]) == pytest.approx(float(f1.compute()))


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


def test_classification_flip_averages_the_probabilities_of_both_views() -> None:
    from vitdense import ClassificationTask

    def classifier(**kwargs) -> ClassificationTask:
        torch.manual_seed(0)
        return ClassificationTask(backbone=VIT_D2_W32, num_classes=3, pretrained=False, img_size=32, **kwargs).eval()

    plain, flipped = classifier(), classifier(inference={"flip": True})
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = (plain(images).softmax(-1) + plain(images.flip(-1)).softmax(-1)) / 2
        torch.testing.assert_close(flipped.eval_logits(images).exp(), expected)
        torch.testing.assert_close(plain.eval_logits(images), plain(images))
        paths = {"image": images, "path": ["a.png", "b.png"]}
        torch.testing.assert_close(torch.stack([p["probs"] for p in flipped.predict_step(paths, 0)]), expected)
    with pytest.raises(ValueError, match="Unknown inference key"):
        classifier(inference={"scales": [1.0]})
