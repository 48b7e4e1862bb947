"""InstanceSegmentationTask: Mask R-CNN on the detection body, box and mask AP, masks and RLE predictions."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.tiny import PATCH8_VIT_D4
from vitdense import DetectionTask, InstanceSegmentationTask
from vitdense.cli.entry import main
from vitdense.data import SyntheticInstanceDataModule

BACKBONE = {**PATCH8_VIT_D4, "img_size": 64}
HEAD = {"channels": 32, "roi_batch_size": 32, "box_head_width": 64, "score_thresh": 0.0}


def batch(split: str = "train") -> dict:
    data = SyntheticInstanceDataModule(num_train=4, num_val=4, image_size=64, batch_size=4)
    data.setup("fit")
    return next(iter(data.train_dataloader() if split == "train" else data.val_dataloader()))


def test_trains_and_scores_boxes_and_masks() -> None:
    task = InstanceSegmentationTask(backbone=BACKBONE, num_classes=3, head=HEAD)
    assert type(task.detector).__name__ == "MaskRCNN" and task.monitor == "val/mask_mAP"
    task.train()
    loss = task.shared_step(batch("train"), "train")
    loss.backward()
    assert loss.item() > 0 and task.detector.roi_heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    task.eval()
    with torch.no_grad():
        val = batch("val")
        task.shared_step(val, "val")
        scores = task.compute_metrics(task.metrics["val"], "val")
        (det, *_) = task(val["image"])
    assert set(scores) == {f"val/{p}mAP{s}" for p in ("", "mask_") for s in ("", "_50", "_75")}
    assert det["masks"].dtype == torch.bool and det["masks"].shape == (len(det["boxes"]), 64, 64)


def test_the_detector_and_the_task_must_agree_on_masks() -> None:
    with pytest.raises(ValueError, match="use InstanceSegmentationTask"):
        DetectionTask(backbone=BACKBONE, num_classes=3, head={"name": "mask_rcnn"})
    with pytest.raises(ValueError, match="for boxes only, use DetectionTask"):
        InstanceSegmentationTask(backbone=BACKBONE, num_classes=3, head={"name": "retinanet"})


def test_synthetic_masks_stay_paired_with_their_boxes_through_the_flips() -> None:
    data = SyntheticInstanceDataModule(num_train=16, num_val=4, image_size=64)
    for i in range(16):
        target = data.dataset("train")[i]["target"]
        assert len(target["masks"]) == len(target["boxes"]) == len(target["labels"])
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)  # a box is the extent of its shape's mask
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_predictions_hold_rle_masks_at_the_original_size(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    task = InstanceSegmentationTask(backbone=BACKBONE, num_classes=3, head=HEAD).eval()
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        (pred,) = task.predict_step({"image": [image], "path": ["a.png"], "orig_size": [(96, 128)],
                                     "valid_size": [(64, 64)]}, 0)  # fmt: skip
    assert pred["masks"].shape == (len(pred["boxes"]), 96, 128)
    task.save_predictions([pred], tmp_path)
    (path, *_) = task.finish_predictions(tmp_path, None)  # the process's part merged into predictions.jsonl
    line = json.loads(path.read_text().splitlines()[0])
    decoded = [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}) for m in line["masks"]]
    assert len(decoded) == len(line["boxes"]) > 0
    assert all(np.array_equal(d, m.numpy().astype(np.uint8)) for d, m in zip(decoded, pred["masks"], strict=True))


def test_cli_fit_test_and_predict(tmp_path: Path) -> None:
    # 32-pixel images, as tests/tiny.py's instance run: nothing checked depends on the size (64 took twice as long)
    cfg = {
        "model": {"class_path": "InstanceSegmentationTask", "init_args": {"backbone": PATCH8_VIT_D4, "head": HEAD}},
        "data": {"class_path": "SyntheticInstanceDataModule",
                 "init_args": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "inst.yaml"
    config.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").glob("inst/version_0/checkpoints/last.ckpt")
    logged = main(["test", "--config", str(config), "--ckpt_path", str(ckpt)]).trainer.callback_metrics
    assert "test/mask_mAP_50" in logged and "test/mAP" in logged
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt)])
    (out,) = (tmp_path / "runs" / "predictions").glob("inst-*/predictions.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and all(len(x["masks"]) == len(x["boxes"]) for x in lines)


@pytest.mark.slow  # ~15 s
def test_predicted_rle_masks_rescored_with_pycocotools_give_the_logged_mask_map(tmp_path: Path, tiny_run) -> None:
    """predict's COCO results (RLE masks), against the val set written as COCO ground truth, score with pycocotools'
    COCOeval exactly what `validate` logged."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    config, ckpt = tiny_run(tmp_path, "instance_trained")
    logged = main(["validate", "--config", str(config), "--ckpt_path", str(ckpt)]).trainer.callback_metrics
    cli = main(["predict", "--config", str(config), "--ckpt_path", str(ckpt)])
    (out,) = (tmp_path / "runs" / "predictions").glob("instance_trained-*/predictions.jsonl")  # <config stem>-<time>
    val = cli.datamodule.dataset("val")
    images, annotations = [], []
    for i in range(len(val)):
        target = val[i]["target"]
        images.append({"id": i, "file_name": val[i]["path"], "height": 64, "width": 64})
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"], strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.numpy()))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label + 1, "iscrowd": 0,
                                "segmentation": rle, "area": float(mask.sum()),
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": k + 1, "name": n} for k, n in enumerate(cli.model.class_names)]}  # fmt: skip
    truth.createIndex()
    # predict's COCO results (RLE masks); predict reuses the val images (synthetic/predict/000003 is
    # synthetic/val/000003), so its image ids map to val's by file number.
    listed = json.loads((out.parent / "coco_images.json").read_text())["images"]
    number = {x["id"]: int(Path(x["file_name"]).stem) for x in listed}
    results = [
        {**r, "image_id": number[r["image_id"]]} for r in json.loads((out.parent / "coco_results.json").read_text())
    ]
    assert len(results) == sum(len(json.loads(line)["masks"]) for line in out.read_text().splitlines())
    evaluator = COCOeval(truth, truth.loadRes(results), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert float(logged["val/mask_mAP"]) > 0
    assert abs(evaluator.stats[0] - float(logged["val/mask_mAP"])) < 1e-4
    assert abs(evaluator.stats[1] - float(logged["val/mask_mAP_50"])) < 1e-4
