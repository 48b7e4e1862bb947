"""The recipe choices the training data makes at fit time (``auto``): the rules, and that a fit applies and prints
what they chose."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.tiny import PATCH8_VIT_D2
from vitdense.data.recipe_rules import class_weight_rule, scale_range_rule


def test_class_weights_only_when_a_class_is_rare() -> None:
    rare = class_weight_rule(np.array([9000, 950, 50]), ["soil", "weed", "crop"])
    assert rare.value == "sqrt_median_frequency" and "crop 0.5%" in rare.reason and "weed" not in rare.reason
    balanced = class_weight_rule(np.array([900, 90, 10]), ["soil", "weed", "crop"])
    assert balanced.value is None and "rarest: crop 1%" in balanced.reason
    # a class absent from training is not a rare class (it has no pixels to weight)
    assert class_weight_rule(np.array([500, 500, 0])).value is None


@pytest.mark.parametrize(("sides", "low"), [([200, 200, 210], 1.0), ([257, 240, 300], 0.87), ([966, 960], 0.5)])
def test_scale_range_keeps_the_crop_inside_the_median_image(sides, low) -> None:
    choice = scale_range_rule(sides, 224)
    assert choice.value == (low, 2.0)


def write_data(root: Path, rare: bool) -> Path:
    """A 3-class folder dataset whose class 2 holds 0.4% (``rare``) or a third of the training pixels."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(2):
            mask = np.zeros((50, 50), np.uint8)
            mask[:, 25:] = 1
            if rare:
                mask[:2, :5] = 2  # 10 of 2500 pixels
            else:
                mask[25:, :] = 2
            image = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def fit_logged(tmp_path: Path, caplog, model: dict, data: dict, **trainer) -> Any:
    """``vitdense fit`` of ``model`` and ``data`` (class path, init args) on the CPU in ``tmp_path``, log captured."""
    from vitdense.cli.entry import main

    cfg = {"model": {"class_path": model.pop("class_path"), "init_args": model},
           "data": {"class_path": data.pop("class_path"), "init_args": data},
           "trainer": {"accelerator": "cpu", "default_root_dir": str(tmp_path), "enable_progress_bar": False,
                       "logger": False, **trainer}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        return main(["fit", "--config", str(tmp_path / "c.yaml")])


@pytest.mark.parametrize("rare", [True, False])
def test_fit_applies_and_prints_the_automatic_choices(rare: bool, tmp_path: Path, caplog) -> None:
    root = write_data(tmp_path / "data", rare)
    model = {"class_path": "SegmentationTask", "backbone": PATCH8_VIT_D2, "head": {"channels": 8},
             "loss": {"class_weights": "auto"}}  # fmt: skip
    data = {"class_path": "SegmentationFolderDataModule", "root": str(root), "num_classes": 3, "crop_size": 32,
            "batch_size": 2, "scale_range": "auto"}  # fmt: skip
    cli = fit_logged(tmp_path, caplog, model, data, fast_dev_run=True)
    text = caplog.text
    assert "data.scale_range: auto -> [0.64, 2.0] (median short side 50 px, crop 32" in text
    transform = cli.datamodule.dataset("train").transform
    scale = next(t for t in transform.transforms if type(t).__name__ == "RandomScale")
    assert scale.scale_limit == pytest.approx((0.64 - 1, 1.0))
    if rare:
        assert "loss.class_weights: auto -> sqrt_median_frequency (1 class(es) under 1%" in text
        weights = cli.model.ce_class_weights
        assert weights is not None and weights[2] > weights[0] and weights[2] > weights[1]
    else:
        assert "loss.class_weights: auto -> None (every class holds >= 1%" in text
        assert cli.model.ce_class_weights is None


def test_box_scale_rule_turns_the_zoom_off_only_for_objects_of_one_size() -> None:
    from vitdense.data.recipe_rules import DETECTION_SCALE_RANGE, box_scale_rule

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    cells = np.where(labels == 0, 0.16, 0.06) * 2 ** rng.normal(0, 0.15, 100)  # two cell types, each of one size
    fixed = box_scale_rule(cells, labels, ["red", "platelet"])
    assert fixed.value == (1.0, 1.0) and "under 0.4" in fixed.reason and "100 boxes" in fixed.reason
    # the same two sizes as one class is not a spread: sizes are compared within a class
    assert box_scale_rule(cells, np.zeros(100, int)).value == DETECTION_SCALE_RANGE
    animals = 0.3 * 2 ** rng.normal(0, 0.8, 100)  # web photos: every distance from the camera
    photo = box_scale_rule(animals, np.zeros(100, int), ["kangaroo"])
    assert photo.value == DETECTION_SCALE_RANGE and "most: kangaroo" in photo.reason
    assert box_scale_rule(np.array([0.2]), np.array([0])).value == DETECTION_SCALE_RANGE  # nothing to measure


def write_boxes(root: Path, sides: list[float], size: tuple[int, int], corner: int) -> None:
    """A COCO dataset of black ``size`` (w, h) images with one square box each, at (``corner``, ``corner``): the first
    half of ``sides`` in train, the rest in val."""
    import json

    half = len(sides) // 2
    for split, split_sides in (("train", sides[:half]), ("val", sides[half:])):
        (root / split / "images").mkdir(parents=True)
        images, annotations = [], []
        for i, side in enumerate(split_sides):
            Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / split / "images" / f"{i}.png")
            images.append({"id": i, "file_name": f"{i}.png", "width": size[0], "height": size[1]})
            box = [corner, corner, side, side]
            annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": 0})
        coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cell"}]}
        (root / split / "annotations.json").write_text(json.dumps(coco))


@pytest.mark.parametrize("spread", [0.0, 1.0])
def test_detection_fit_applies_and_prints_the_scale_rule(spread: float, tmp_path: Path, caplog) -> None:
    from vitdense.data import CocoDetectionDataModule

    rng = np.random.default_rng(1)
    write_boxes(tmp_path, [16 * 2 ** (spread * rng.normal()) for _ in range(8)], (80, 60), corner=2)
    dm = CocoDetectionDataModule(root=str(tmp_path), image_size=64, scale_range="auto")
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    resize = dm.dataset("train").transform.transforms[0]
    if spread == 0.0:
        assert "data.scale_range: auto -> [1.0, 1.0] (object size spreads 0.00 octaves" in caplog.text
        assert list(resize.max_size) == [64]
    else:
        assert "data.scale_range: auto -> [0.5, 1.5]" in caplog.text and "objects at many scales" in caplog.text
        assert min(resize.max_size) == 32 and max(resize.max_size) == 96


def test_anchor_scale_rule_keeps_the_default_unless_the_small_boxes_miss_its_smallest_anchor() -> None:
    from vitdense.data.recipe_rules import anchor_scale_rule

    rng = np.random.default_rng(0)
    # Faster R-CNN on P2 (stride 4): smallest anchor 8 px per unit of scale, 32 px at the default 4
    cells = 51 * 2 ** rng.normal(0, 0.2, 400)  # blood cells at 320 px: the 10% quantile ~44 px
    assert anchor_scale_rule(cells, 8).value == 4.0
    assert "the default" in anchor_scale_rule(cells, 8).reason
    defects = 17 * 2 ** rng.normal(0, 0.25, 200)  # PCB defects at 320 px: ~14 px, under 32 / sqrt(2)
    chosen = anchor_scale_rule(defects, 8)
    assert chosen.value == 2.0 and "the smallest anchor 16 px" in chosen.reason and "would miss them" in chosen.reason
    cars = np.full(50, 5.0)  # 5 px cars: even scale 1 (8 px) is too coarse; the finest is chosen and said
    finest = anchor_scale_rule(cars, 8)
    assert finest.value == 1.0 and "larger image_size" in finest.reason
    assert anchor_scale_rule(defects, 16).value == 1.0  # a head whose anchors start coarser (stride 8, x2)
    assert anchor_scale_rule(np.zeros(0), 8).value == 4.0  # nothing to measure: the default


def test_detection_fit_chooses_keeps_and_restores_the_anchor_scale(tmp_path: Path, caplog) -> None:
    import torch

    from vitdense.cli.entry import main

    write_boxes(tmp_path, [6.0] * 4, (64, 64), corner=10)
    head = {"name": "faster_rcnn", "channels": 16, "anchor_scale": "auto", "box_head_width": 32, "roi_batch_size": 16}
    backbone = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}
    data = {"class_path": "CocoDetectionDataModule", "root": str(tmp_path), "image_size": 64, "batch_size": 2,
            "num_workers": 0}  # fmt: skip
    model = {"class_path": "DetectionTask", "backbone": backbone, "head": dict(head)}
    cli = fit_logged(tmp_path, caplog, model, data, max_steps=1, limit_val_batches=1)
    # 6 px boxes: 8.5 px at most for the smallest anchor, so scale 1 (8 px on P2; the default's 32 px misses them)
    assert "head.anchor_scale: auto -> 1 (10% of the 2 training boxes are under 6.0 px" in caplog.text
    sizes = cli.model.detector.rpn.anchor_generator.sizes
    assert sizes[0] == (8,) and sizes[1] == (16,)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["head"]["anchor_scale"] == 1.0
    # the same config (auto) scoring the checkpoint: the anchors it trained with, not the default's
    again = ["--trainer.default_root_dir", str(tmp_path / "validate"), "--ckpt_path", str(ckpt)]
    cli = main(["validate", "--config", str(tmp_path / "c.yaml"), *again])
    assert cli.model.anchor_scale == 1.0 and cli.model.detector.rpn.anchor_generator.sizes[0] == (8,)
    # ... and so does a model built in Python from the same settings, given the checkpoint by a Trainer
    from lightning.pytorch import Trainer

    from vitdense import DetectionTask

    model = DetectionTask(num_classes=1, img_size=64, backbone=cli.model.hparams["backbone"], head=head)
    assert model.anchor_scale == 4.0  # auto, before any data: the default's anchors
    trainer = Trainer(accelerator="cpu", limit_val_batches=1, logger=False, enable_progress_bar=False,
                      default_root_dir=str(tmp_path / "python"))  # fmt: skip
    trainer.validate(model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
    assert model.anchor_scale == 1.0 and model.detector.rpn.anchor_generator.sizes[0] == (8,)

    # a DataModule that cannot measure boxes is told, not silently given the default's anchors
    from types import SimpleNamespace

    model._trainer = SimpleNamespace(datamodule=SimpleNamespace())
    with pytest.raises(
        ValueError,
        match=r"anchor_scale: auto needs a DataModule that can measure its training boxes "
        r"\(SimpleNamespace cannot\); give a number \(the default is 4\)",
    ):
        model.choose_anchor_scale()


def test_solid_object_is_one_region_without_holes() -> None:
    from vitdense.data.regions import holes, solid_object

    region = np.zeros((9, 9), bool)
    region[2:7, 2:7] = True
    assert solid_object(region)
    ring = region.copy()
    ring[4, 4] = False  # an enclosed pixel: a hole
    assert not solid_object(ring) and holes(ring).sum() == 1
    notch = region.copy()
    notch[4, 2:5] = False  # open to the outside through the left edge of the square: no hole
    assert solid_object(notch)
    diagonal = np.zeros((9, 9), bool)
    diagonal[1, 1] = diagonal[2, 2] = True  # touching at a corner: one 8-connected region
    assert solid_object(diagonal)
    two = diagonal.copy()
    two[6, 6] = True
    assert not solid_object(two)
    # a hole may not leak out between two diagonal pixels of the region (4-connected outside)
    diamond = np.zeros((5, 5), bool)
    diamond[[1, 2, 2, 3], [2, 1, 3, 2]] = True
    assert holes(diamond)[2, 2] and not solid_object(diamond)


def test_keep_largest_keeps_one_solid_region_and_gives_the_rest_their_next_class() -> None:
    from vitdense.data.regions import keep_largest

    classes = np.zeros((10, 12), np.int64)
    classes[1:6, 1:6] = 1  # the large region, with a hole
    classes[3, 3] = 0
    classes[7:9, 8:10] = 1  # a small second region
    scores = np.zeros((3, 10, 12), np.float32)
    scores[1] = 1.0
    scores[2, 7:9, 8:10] = 0.5  # its next most likely class is 2, not the background
    out = keep_largest(classes, scores, [1])
    assert out[3, 3] == 1  # hole filled
    assert (out[7:9, 8:10] == 2).all()  # the small region's next class
    assert (out[1:6, 1:6] == 1).all() and out.sum() == 25 + 2 * 4
    # classes not listed, and a listed class not predicted, are left as they are
    assert (keep_largest(classes, scores, [2]) == classes).all()
    assert (keep_largest(classes, scores, []) == classes).all()


def test_single_object_rule_needs_every_mask_and_enough_of_them() -> None:
    from vitdense.data.recipe_rules import MIN_OBJECT_MASKS, single_object_rule

    names = ["skin", "lesion", "hair"]
    enough = MIN_OBJECT_MASKS
    chosen = single_object_rule(np.array([enough, enough, enough]), np.array([enough - 5, enough, enough - 1]), names)
    assert chosen.value == [1] and f"lesion ({enough} masks)" in chosen.reason
    one_off = single_object_rule(np.array([enough, enough, 0]), np.array([3, enough - 1, 0]), names)
    assert one_off.value == []
    assert f"closest: lesion, one solid object in {enough - 1} of {enough} masks" in one_off.reason
    few = single_object_rule(np.array([enough - 1, 0, 0]), np.array([enough - 1, 0, 0]), names)
    assert few.value == []


def write_objects(root: Path) -> Path:
    """A 2-class folder dataset: one solid square of class 1 in every mask (``MIN_OBJECT_MASKS`` training masks)."""
    from vitdense.data.recipe_rules import MIN_OBJECT_MASKS

    rng = np.random.default_rng(0)
    for split, count in (("train", MIN_OBJECT_MASKS), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((40, 40), np.uint8)
            top, left = rng.integers(0, 20, 2)
            mask[top : top + 15, left : left + 15] = 1
            image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def test_fit_chooses_keeps_and_restores_keep_largest(tmp_path: Path, caplog) -> None:
    import torch

    root = write_objects(tmp_path / "data")
    model = {"class_path": "SegmentationTask", "backbone": PATCH8_VIT_D2, "head": {"channels": 8},
             "inference": {"keep_largest": "auto"}}  # fmt: skip
    data = {"class_path": "SegmentationFolderDataModule", "root": str(root), "num_classes": 2,
            "class_names": ["background", "object"], "crop_size": 32, "batch_size": 2}  # fmt: skip
    cli = fit_logged(tmp_path, caplog, model, data, max_steps=1, limit_val_batches=1)
    assert "inference.keep_largest: auto -> ['object'] (one solid object in every training mask" in caplog.text
    assert cli.model.keep_largest == [1]
    ckpt = next(tmp_path.rglob("*.ckpt"))
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["inference"]["keep_largest"] == [1]
    # a model built from the same settings (auto) takes the choice from the checkpoint it is given
    from lightning.pytorch import Trainer

    from vitdense import SegmentationTask

    model = SegmentationTask(num_classes=2, backbone=cli.model.hparams["backbone"], head={"channels": 8},
                             inference={"keep_largest": "auto"}, class_names=["background", "object"])  # fmt: skip
    assert model.keep_largest == []  # auto, before any data
    trainer = Trainer(accelerator="cpu", limit_val_batches=1, logger=False, enable_progress_bar=False,
                      default_root_dir=str(tmp_path / "python"))  # fmt: skip
    trainer.validate(model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
    assert model.keep_largest == [1]
    # what validation scores is the reshaped prediction: one region of class 1 at most
    logits = torch.randn(1, 2, 24, 24)
    import cv2

    ids = model.classes_of(logits)[0].numpy().astype(np.uint8)
    assert cv2.connectedComponents((ids == 1).astype(np.uint8), connectivity=8)[0] - 1 <= 1
    with pytest.raises(ValueError, match=r"inference.keep_largest: 'lesion' is neither a class name \(background, "):
        SegmentationTask(num_classes=2, backbone=cli.model.hparams["backbone"], head={"channels": 8},
                         inference={"keep_largest": ["lesion"]}, class_names=["background", "object"])  # fmt: skip


def test_keep_largest_auto_without_mask_regions_says_what_to_give() -> None:
    """A DataModule that cannot read its training masks' regions (scenes by windows, streams) is told, not given a
    silent none."""
    from types import SimpleNamespace

    from vitdense import SegmentationTask

    model = SegmentationTask(num_classes=2, backbone=PATCH8_VIT_D2, head={"channels": 8},
                             inference={"keep_largest": "auto"})  # fmt: skip
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace())
    with pytest.raises(ValueError, match=r"keep_largest: auto needs a DataModule that can find the connected regions "
                                         r"of its training masks \(SimpleNamespace cannot\); give a list of class "
                                         r"names, or \[\] for none"):  # fmt: skip
        model.setup("fit")


def test_keep_largest_of_several_classes_leaves_each_one_region_in_any_order() -> None:
    import cv2

    from vitdense.data.regions import keep_largest

    classes = np.zeros((8, 16), np.int64)
    classes[1:4, 1:4] = 1  # class 1: one region
    classes[1:5, 8:12] = 2  # class 2: a large region ...
    classes[6:8, 14:16] = 2  # ... and a small one, far from class 1, whose next most likely class is 1
    scores = np.zeros((3, 8, 16), np.float32)
    scores[1, 6:8, 14:16] = 0.5
    scores[0, 6:8, 14:16] = 0.2
    for keep in ([1, 2], [2, 1]):
        out = keep_largest(classes, scores, keep)
        for k in (1, 2):
            assert cv2.connectedComponents((out == k).astype(np.uint8), connectivity=8)[0] - 1 == 1, (keep, k)
        assert (out[6:8, 14:16] == 0).all()  # dropped from 2, then from 1: its next class left is the background
    # every class listed (bands 0 | 1 | 0 | 1): the passes end, each class one region
    bands = np.repeat(np.array([0, 0, 0, 1, 1, 1, 0, 1]), 3).reshape(8, 3).repeat(2, 1)
    out = keep_largest(bands, np.zeros((2, 8, 6), np.float32), [0, 1])
    for k in (0, 1):
        assert cv2.connectedComponents((out == k).astype(np.uint8), connectivity=8)[0] - 1 == 1, k
