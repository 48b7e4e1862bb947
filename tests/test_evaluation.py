"""vitdense.evaluate and `vitdense evaluate`: per-class tables, confusion matrices and per-image scores that agree
with the metrics the task logs, for every task."""

import json
from pathlib import Path

import numpy as np
import pytest

import vitdense
from tests.tiny import SPLITS
from vitdense.cli.entry import main


def test_segmentation_report_agrees_with_the_logged_metrics(tmp_path: Path, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, "segmentation")
    report = vitdense.evaluate(config, ckpt, "val")
    assert report.task == "segmentation" and len(report.per_image) == SPLITS["num_val"]
    ious = [row["IoU"] for row in report.per_class]
    assert np.nanmean(ious) == pytest.approx(report.metrics["val/mIoU"], abs=1e-6)
    for row in report.per_class:
        assert row["IoU"] == pytest.approx(report.metrics[f"val/IoU/{row['class']}"], abs=1e-6, nan_ok=True)
    # The confusion matrix is the task's own (rows: ground truth): its row sums are the ground-truth pixels.
    assert report.confusion.sum(1).tolist() == [row["gt_pixels"] for row in report.per_class]
    assert report.confusion.sum() == SPLITS["num_val"] * 32 * 32
    # Per image: each image's own mIoU, and the worst first.
    assert [r["index"] for r in report.per_image] == list(range(SPLITS["num_val"]))
    worst = report.worst(2)
    assert worst[0]["score"] <= worst[1]["score"] <= min(r["score"] for r in report.per_image if r not in worst)
    # example() re-runs the model on one image: the same prediction, so the same per-image mIoU.
    shown = report.example(worst[0]["index"])
    truth, pred = shown["truth"], shown["pred"]
    assert shown["image"].shape == (32, 32, 3) and pred.shape == truth.shape
    ious = [((truth == k) & (pred == k)).sum() / ((truth == k) | (pred == k)).sum()
            for k in range(4) if ((truth == k) | (pred == k)).any()]  # fmt: skip
    assert np.mean(ious) == pytest.approx(worst[0]["score"], abs=1e-6)


def test_classification_report_counts_every_image(tmp_path: Path, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, "classification")
    report = vitdense.evaluate(config, ckpt, "test")
    assert report.split == "test" and len(report.per_image) == SPLITS["num_test"]
    correct = sum(r["label"] == r["pred"] for r in report.per_image)
    assert correct / SPLITS["num_test"] == pytest.approx(report.metrics["test/acc"], abs=1e-6)
    assert np.trace(report.confusion) == correct and report.confusion.sum() == SPLITS["num_test"]
    assert [row["support"] for row in report.per_class] == report.confusion.sum(1).tolist()
    for r in report.per_image:  # score = probability of the true class; confidence = of the predicted one
        assert r["score"] <= r["confidence"] + 1e-6
    shown = report.example(2)
    assert (shown["truth"], shown["pred"]) == (report.per_image[2]["label"], report.per_image[2]["pred"])


@pytest.mark.slow  # a detector fit + evaluate: 15-20 s
def test_detection_report_per_class_ap_averages_to_the_logged_map(tmp_path: Path, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, "detection")
    report = vitdense.evaluate(config, ckpt, "val")
    assert sum(row["detections"] for row in report.per_class) > 0
    with_boxes = [row for row in report.per_class if row["gt_boxes"]]
    assert np.mean([row["AP"] for row in with_boxes]) == pytest.approx(report.metrics["val/mAP"], abs=1e-6)
    assert np.mean([row["AP50"] for row in with_boxes]) == pytest.approx(report.metrics["val/mAP_50"], abs=1e-6)
    assert sum(row["gt_boxes"] for row in report.per_class) == sum(r["tp"] + r["fn"] for r in report.per_image)
    recall, precision = next(iter(report.curves.values()))
    assert recall.shape == precision.shape == (101,)
    (at_half,) = report.threshold_table([0.5])
    assert at_half["tp"] + at_half["fn"] == sum(row["gt_boxes"] for row in report.per_class)
    assert at_half["tp"] == sum(r["tp"] for r in report.per_image)
    shown = report.example(0)
    assert len(shown["truth"]["boxes"]) == report.per_image[0]["tp"] + report.per_image[0]["fn"]
    assert shown["pred"]["boxes"].shape[1] == 4 and shown["image"].shape == (32, 32, 3)


@pytest.mark.slow  # a detector fit + evaluate: 15-20 s
def test_instance_report_has_per_class_mask_ap_averaging_to_the_logged_mask_map(tmp_path: Path, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, "instance_trained")
    report = vitdense.evaluate(config, ckpt, "val")
    with_boxes = [row for row in report.per_class if row["gt_boxes"]]
    assert report.metrics["val/mask_mAP"] > 0
    for ours, logged in (("mask_AP", "val/mask_mAP"), ("mask_AP50", "val/mask_mAP_50"), ("AP", "val/mAP")):
        assert np.mean([row[ours] for row in with_boxes]) == pytest.approx(report.metrics[logged], abs=1e-6)


def test_cli_writes_into_a_new_folder_of_the_run_and_never_overwrites(tmp_path: Path, capsys, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, "classification")
    main(["evaluate", "--config", str(config), "--ckpt_path", str(ckpt)])
    main(["evaluate", "--config", str(config), "--ckpt_path", str(ckpt)])
    run_dir = ckpt.parent.parent
    first, second = run_dir / "evaluation-val", run_dir / "evaluation-val-2"
    assert sorted(p.name for p in first.iterdir()) == ["metrics.json", "per_class.csv", "per_image.csv"]
    assert second.is_dir()
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["task"] == "classification" and "val/acc" in metrics["metrics"]
    assert (first / "per_image.csv").read_text().count("\n") == SPLITS["num_val"] + 1
    assert "worst images:" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="not empty"):
        main(["evaluate", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(first)])


def test_match_boxes_counts_duplicates_and_wrong_classes_as_false_positives() -> None:
    import torch

    from vitdense.evaluation.report import match_boxes

    target = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])}
    pred = {
        "boxes": torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([0, 0, 1]),  # the second duplicates the first; the third has the wrong class
    }
    assert match_boxes(pred, target, 0.5) == (1, 2, 1)
    assert match_boxes(pred, target, 0.85) == (1, 0, 1)
    assert match_boxes(pred, target, 0.95) == (0, 0, 2)


def test_classification_table_means_equal_torchmetrics_macro_scores() -> None:
    """A class with images but no predictions scores precision 0 and F1 0 (as the logged macro val/f1 counts it), not
    NaN; a class with neither images nor predictions is left out; the table's F1 mean is the logged val/f1."""
    import torch
    from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

    from vitdense.evaluation.report import _classification

    names = ["a", "b", "never_predicted", "absent", "only_predicted"]
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 0, 1, 4, 1, 0])
    records = [{"index": i, "path": f"{i}.png", "label": int(t), "pred": int(p), "probs": np.eye(5)[int(p)]}
               for i, (t, p) in enumerate(zip(labels, preds, strict=True))]  # fmt: skip
    table = {row["class"]: row for row in _classification(records, names)["per_class"]}
    assert table["never_predicted"]["precision"] == 0 and table["never_predicted"]["F1"] == 0
    assert table["only_predicted"]["recall"] == 0 and table["only_predicted"]["F1"] == 0
    assert all(np.isnan(table["absent"][k]) for k in ("precision", "recall", "F1"))
    for key, metric in (("F1", MulticlassF1Score), ("precision", MulticlassPrecision), ("recall", MulticlassRecall)):
        logged = float(metric(5, average="macro")(preds, labels))
        assert np.nanmean([row[key] for row in table.values()]) == pytest.approx(logged), key
