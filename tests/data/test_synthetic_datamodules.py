"""The synthetic DataModules: seeded, varied, rendered once, balanced where they promise it."""

import torch

from vitdense.data import (
    SyntheticClassificationDataModule,
    SyntheticDetectionDataModule,
    SyntheticSegmentationDataModule,
)


def test_synthetic_deterministic_and_varied() -> None:
    items = [SyntheticSegmentationDataModule(seed=s, image_size=48).dataset("val")[3] for s in (0, 0, 1)]
    assert torch.equal(items[0]["image"], items[1]["image"]) and torch.equal(items[0]["mask"], items[1]["mask"])
    assert not torch.equal(items[0]["image"], items[2]["image"])
    dm = SyntheticSegmentationDataModule(image_size=48, batch_size=16)
    assert dm.num_classes == 4 and dm.class_names == ["background", "circle", "rectangle", "triangle"]
    assert not torch.equal(dm.dataset("train")[0]["mask"], dm.dataset("val")[0]["mask"])
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (16, 3, 48, 48) and batch["mask"].shape == (16, 48, 48)
    assert set(batch["mask"].unique().tolist()) == {0, 1, 2, 3}


def test_synthetic_samples_are_rendered_once_and_stay_the_same() -> None:
    from vitdense.data.datamodules.synthetic import SyntheticShapesDataset

    dataset = SyntheticShapesDataset(8, "train", seed=3, image_size=32)
    calls = []
    render = dataset.render
    dataset.render = lambda i: calls.append(i) or render(i)
    first, again = dataset[5], dataset[5]
    assert calls == [5]  # the second access reuses the rendered sample
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    fresh = SyntheticShapesDataset(8, "train", seed=3, image_size=32)[5]
    assert torch.equal(first["image"], fresh["image"])
    assert SyntheticShapesDataset(10**6, "train", image_size=64).cache.items is None  # too large to keep


def test_synthetic_deterministic_balanced_batches() -> None:
    items = [SyntheticClassificationDataModule(seed=s, image_size=32).dataset("val")[4] for s in (0, 0, 1)]
    assert torch.equal(items[0]["image"], items[1]["image"]) and not torch.equal(items[0]["image"], items[2]["image"])
    dm = SyntheticClassificationDataModule(num_val=12, image_size=32, batch_size=12)
    assert dm.num_classes == 3 and dm.class_names == ["circle", "rectangle", "triangle"]
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (12, 3, 32, 32) and batch["label"].dtype == torch.int64
    assert torch.bincount(batch["label"]).tolist() == [4, 4, 4]


def test_synthetic_deterministic_with_valid_boxes() -> None:
    items = [SyntheticDetectionDataModule(seed=s).dataset("val")[5] for s in (0, 0, 1)]
    assert torch.equal(items[0]["image"], items[1]["image"])
    assert torch.equal(items[0]["target"]["boxes"], items[1]["target"]["boxes"])
    assert not torch.equal(items[0]["image"], items[2]["image"])
    dm = SyntheticDetectionDataModule(num_val=32, batch_size=32)
    assert dm.num_classes == 3 and dm.class_names == ["circle", "rectangle", "triangle"]
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    counts = [len(t["boxes"]) for t in batch["target"]]
    assert 0 in counts and max(counts) <= 3 and sum(counts) > 32
    boxes = torch.cat([t["boxes"] for t in batch["target"]])
    labels = torch.cat([t["labels"] for t in batch["target"]])
    assert (boxes >= 0).all() and (boxes <= 64).all() and (boxes[:, 2:] - boxes[:, :2] >= 4).all()
    assert set(labels.tolist()) == {0, 1, 2} and batch["image"][0].shape == (3, 64, 64)
