"""Predicted PNG masks are the scored predictions: re-scored with numpy against the ground truth, they give the
test/mIoU the task logs."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.fake_data import write_folder_dataset
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main


def test_predicted_masks_rescored_with_numpy_give_the_logged_miou(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data", num_classes=3, sizes=((40, 48), (36, 52), (44, 40)))
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": PATCH8_VIT_D4, "head": {"channels": 16},
                                                                  "optimizer": {"lr": 1e-3}}},
        # eval_size 32: images are resized for the model, and its logits resized back to each mask's resolution.
        "data": {"class_path": "SegmentationFolderDataModule",
                 "init_args": {"root": str(root), "crop_size": 32, "eval_size": 32, "batch_size": 2,
                               "predict_dir": str(root / "test" / "images")}},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").glob("seg/version_0/checkpoints/last.ckpt")
    logged = main(["test", "--config", str(config), "--ckpt_path", str(ckpt)]).trainer.callback_metrics
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt), "--model.init_args.overlays", "true"])
    (out,) = (tmp_path / "runs" / "predictions").glob("seg-*")

    k, void = 3, 255
    confusion = np.zeros((k, k), np.int64)
    for mask_path in sorted((root / "test" / "masks").glob("*.png")):
        truth = np.array(Image.open(mask_path))
        pred = np.array(Image.open(out / mask_path.name))
        assert pred.shape == truth.shape
        valid = truth != void
        confusion += np.bincount(truth[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    miou = np.mean(tp[union > 0] / union[union > 0])
    assert abs(miou - float(logged["test/mIoU"])) < 1e-6
    assert abs(tp.sum() / confusion.sum() - float(logged["test/pixel_acc"])) < 1e-6
    # overlays: each image half-blended with its mask's palette colours
    for image_path in sorted((root / "test" / "images").iterdir()):
        overlay = np.array(Image.open(out / "overlays" / f"{image_path.stem}.png")).astype(int)
        pred = Image.open(out / f"{image_path.stem}.png")
        colours = np.array(pred.getpalette()[:768]).reshape(256, 3)[np.array(pred)]
        expected = np.array(Image.open(image_path).convert("RGB")).astype(int) // 2 + colours // 2
        assert overlay.shape == expected.shape and np.array_equal(overlay, expected)


@pytest.mark.slow  # ~15 s
def test_detection_predict_writes_coco_results_with_the_splits_ids(tmp_path: Path, tiny_run) -> None:
    """predict on the images of a COCO split writes coco_results.json with that split's image and category ids, one
    entry per predictions.jsonl box (xyxy -> xywh), which pycocotools loads against the split's annotation file."""
    import json

    from pycocotools.coco import COCO

    config, ckpt = tiny_run(tmp_path, "detection")  # on synthetic shapes
    # The synthetic val split as a COCO folder with ids of its own: images 100.., categories 10, 20, 30.
    cli = main(["--config", str(config), "--trainer.logger", "false"], run=False)
    val = cli.datamodule.dataset("val")
    root = tmp_path / "coco"
    (root / "val" / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(len(val)):
        item = val[i]
        pixels = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(root / "val" / "images" / f"shape{i}.png")
        images.append({"id": 100 + i, "file_name": f"shape{i}.png", "height": 32, "width": 32})
        for (x0, y0, x1, y1), label in zip(item["target"]["boxes"].tolist(), item["target"]["labels"].tolist(),
                                           strict=True):  # fmt: skip
            w, h = x1 - x0, y1 - y0
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 10 * (label + 1),
                                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    categories = [{"id": 10 * (k + 1), "name": name} for k, name in enumerate(cli.model.class_names)]
    truth_file = root / "val" / "annotations.json"
    truth_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    cfg = yaml.safe_load(config.read_text())
    cfg["data"] = {"class_path": "CocoDetectionDataModule",
                   "init_args": {"root": str(root), "image_size": 32, "batch_size": 4,
                                 "predict_dir": str(root / "val" / "images")}}  # fmt: skip
    coco_config = tmp_path / "configs" / "coco.yaml"
    coco_config.write_text(yaml.safe_dump(cfg))

    main(["predict", "--config", str(coco_config), "--ckpt_path", str(ckpt)])
    (out,) = (tmp_path / "runs" / "predictions").glob("coco-*")
    results = json.loads((out / "coco_results.json").read_text())
    listed = json.loads((out / "coco_images.json").read_text())
    assert listed["categories"] == categories and sorted(x["id"] for x in listed["images"]) == [x["id"] for x in images]
    lines = {Path(x["path"]).name: x for x in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert len(results) == sum(len(x["boxes"]) for x in lines.values()) > 0
    first = lines[images[0]["file_name"]]
    x0, y0, x1, y1 = first["boxes"][0]
    assert {"image_id": 100, "category_id": 10 * (first["labels"][0] + 1), "score": first["scores"][0]}.items() <= (
        results_of_100 := [r for r in results if r["image_id"] == 100]
    )[0].items()
    assert np.allclose(results_of_100[0]["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.01)
    COCO(str(truth_file)).loadRes(results)  # raises on an image id the split does not have


def test_coco_results_rescored_with_pycocotools_give_torchmetrics_map(tmp_path: Path) -> None:
    """The same detections scored by vitdense's metric and, written as COCO results, by pycocotools' COCOeval."""
    import json

    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vitdense.data.formats.coco import write_coco_results
    from vitdense.tasks.metrics import DetectionMAP

    rng = np.random.default_rng(0)
    images, annotations, lines, metric = [], [], [], DetectionMAP(box_format="xyxy")
    for i in range(6):
        xy = rng.uniform(0, 60, (4, 2))
        truth = np.concatenate([xy, xy + rng.uniform(8, 40, (4, 2))], 1)
        labels = rng.integers(0, 2, 4)
        # Predictions: the boxes jittered (some below IoU 0.5), one missed, one false positive, random scores.
        boxes = np.concatenate([truth[:3] + rng.normal(0, 2, (3, 4)), [[5.0, 5.0, 30.0, 30.0]]])
        pred_labels, scores = np.append(labels[:3], 1), rng.uniform(0.1, 1, 4)
        images.append({"id": 7 + i, "file_name": f"{i}.jpg", "height": 120, "width": 120})
        for box, label in zip(truth.tolist(), labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": 7 + i, "category_id": 3 + 2 * label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        lines.append({"path": f"/x/{i}.jpg", "height": 120, "width": 120, "boxes": boxes.round(2).tolist(),
                      "scores": scores.round(4).tolist(), "labels": pred_labels.tolist()})  # fmt: skip
        metric.update([{"boxes": torch.tensor(boxes.round(2)), "scores": torch.tensor(scores.round(4)),
                        "labels": torch.tensor(pred_labels)}],
                      [{"boxes": torch.tensor(truth), "labels": torch.tensor(labels)}])  # fmt: skip
    categories = [(3, "a"), (5, "b")]
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                      "categories": [{"id": k, "name": n} for k, n in categories]}))  # fmt: skip
    results_file, _ = write_coco_results(lines, tmp_path, categories, {f"{i}.jpg": 7 + i for i in range(6)})
    truth = COCO(str(truth_file))
    evaluator = COCOeval(truth, truth.loadRes(str(results_file)), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    expected = metric.compute()
    assert 0.1 < float(expected["map"]) < 0.9
    assert abs(evaluator.stats[0] - float(expected["map"])) < 1e-4
    assert abs(evaluator.stats[1] - float(expected["map_50"])) < 1e-4
