"""benchmarks/small_tasks.py's plain Mask R-CNN side without training: COCO polygons become masks that flip with
their boxes, the scorer gives box and mask mAP apart, and the across-sets table compares the instance rows on mask
mAP."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import small_tasks as st
import small_tasks_across as across

H, W = 40, 60
TRIANGLE = [10, 5, 30, 5, 10, 30]  # a right triangle in the box [10, 5, 30, 30]: its mirror image is another shape


def write_split(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "images" / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 25], "segmentation": [TRIANGLE]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [40, 10, 10, 10],
             "segmentation": [[40, 10, 50, 10, 50, 20, 40, 20]]}]  # fmt: skip
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "annotations": anns,
            "categories": [{"id": 7, "name": "square"}, {"id": 3, "name": "triangle"}]}  # fmt: skip
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def extent(mask: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_polygons_become_masks_that_flip_with_their_boxes(tmp_path: Path) -> None:
    data = st.CocoObjects(write_split(tmp_path / "val"), train=True, masks=True)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        _, target = data[0]
        assert target["labels"].tolist() == [1, 2]  # categories in id order: 3 -> 1, 7 -> 2
        assert target["masks"].shape == (2, H, W) and target["masks"].dtype == torch.uint8
        for box, mask in zip(target["boxes"].tolist(), target["masks"], strict=True):
            assert np.abs(np.array(extent(mask)) - box).max() <= 1, (extent(mask), box)
        seen.add(target["boxes"][0, 0].item())
    assert seen == {10.0, W - 30.0}  # both the flipped and the unflipped image were drawn


def test_scorer_gives_box_and_mask_map_apart(tmp_path: Path) -> None:
    data = st.CocoObjects(write_split(tmp_path / "val"), train=False, masks=True)

    def oracle(flip_masks: bool):
        def model(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            _, t = data[0]
            masks = t["masks"].flip(-1) if flip_masks else t["masks"]
            return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                     "masks": masks[:, None].float()}]  # fmt: skip

        return model

    right = st.coco_map(oracle(False), data, "test_")
    assert right == {"test_mAP": 1.0, "test_mAP_50": 1.0, "test_mask_mAP": 1.0, "test_mask_mAP_50": 1.0}
    wrong_masks = st.coco_map(oracle(True), data, "")
    assert wrong_masks["mAP"] == 1.0 and wrong_masks["mask_mAP"] < 0.5
    boxes_only = st.coco_map(oracle(False), st.CocoObjects(tmp_path / "val", train=False), "")
    assert boxes_only == {"mAP": 1.0, "mAP_50": 1.0}  # detection's rows keep their names


def test_across_compares_instance_rows_on_mask_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(across.DATASETS, "shapes", {"task": "instance", "epochs": 2, "size": 64, "batch": 1})
    monkeypatch.setitem(across.ROW_NOTES, "shapes", {"vitdense, layer_decay=1.0": "the variant"})

    def row(mask_map: float) -> dict:
        return {"test_mask_mAP": mask_map, "test_mAP": 0.9, "mask_mAP": 0.0, "epochs": 2, "batch": 1, "size": 64,
                "gflops": 50.0}  # fmt: skip

    rows = {across.SHIPPED_ROW["instance"]: {"0": row(0.3), "1": row(0.5)}, "peer": {"0": row(0.2)},
            "vitdense, layer_decay=1.0": {"0": row(0.6)},
            "vitdense, layer_decay=1.0 @4x1, 64": {"0": row(0.7)}}  # fmt: skip
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "instance.json").write_text(json.dumps(rows))
    lines = across.table("instance", tmp_path)
    assert lines[0].startswith("## instance (mask_mAP")
    assert "| shapes | test | 0.400 | 0.200 | +20.0 | 2 / 1 | 2x1, 64 | 50-50 |" in lines
    assert "- shapes, vitdense, layer_decay=1.0 (the variant): 0.600 test (1 seeds)" in lines
    assert "- shapes, vitdense, layer_decay=1.0 @4x1, 64 (the variant): 0.700 test (1 seeds)" in lines  # same note
    assert not any("hymenoptera" in line or "raccoon" in line for line in lines)


@pytest.mark.parametrize("name", ["faster_rcnn", "retinanet"])
def test_also_infer_changes_how_a_trained_detector_keeps_boxes(name: str) -> None:
    from tests.tiny import PATCH8_VIT_D2
    from vitdense import DetectionTask

    head = {"name": name, "channels": 32, "score_thresh": 0.0, "box_head_width": 64}
    task = DetectionTask(backbone={**PATCH8_VIT_D2, "img_size": 64}, num_classes=3, head=head).eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert len(task(image)[0]["boxes"]) > 0
        before = {k: v.clone() for k, v in task.state_dict().items()}
        st.set_detection_inference(task, {"score_thresh": 1.0, "flip": True})
        assert len(task(image)[0]["boxes"]) == 0  # no score exceeds 1: the detector itself applies the threshold
        assert task.inference_cfg["flip"] is True and task.inference_cfg["mode"] == "whole"
        st.set_detection_inference(task, {"score_thresh": 0.0, "detections_per_img": 2})
        assert len(task(image)[0]["boxes"]) == 2 and task.inference_cfg["flip"] is True  # earlier keys kept
    assert all(torch.equal(v, task.state_dict()[k]) for k, v in before.items())  # the weights untouched
    with pytest.raises(ValueError, match="mode"):
        st.set_detection_inference(task, {"mode": "sideways"})


def test_also_infer_rows_keep_the_budget_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rescored row is '<row>, inference k=v' before the budget suffix, records its base row, and the base row is
    the run's own scores."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()

    def fake_run(task: str, args: object, seed: int, work: Path) -> tuple[dict, dict]:
        return {"mAP": 0.25, "mAP_50": 0.5}, {"inference flip=true": {"mAP": 0.3, "mAP_50": 0.6}}

    monkeypatch.setattr(st, "run_vitdense", fake_run)
    monkeypatch.setattr(st, "matmul_gflops", lambda: 50.0)
    argv = ["small_tasks.py", "--task", "detection", "--root", str(tmp_path / "data"), "--only", "vitdense",
            "--seeds", "0", "--epochs", "2", "--size", "64", "--variant", "x=1", "--also-infer", '{"flip": true}',
            "--out", str(tmp_path / "out")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    st.main()
    rows = json.loads((tmp_path / "out" / "detection.json").read_text())
    suffix = " @2x4, 64"
    assert set(rows) == {"vitdense, x=1" + suffix, "vitdense, x=1, inference flip=true" + suffix}
    base, again = rows["vitdense, x=1" + suffix]["0"], rows["vitdense, x=1, inference flip=true" + suffix]["0"]
    assert base["mAP"] == 0.25 and "same_run_as" not in base
    assert again["mAP"] == 0.3 and again["same_run_as"] == "vitdense, x=1" + suffix
    assert again["seconds"] == base["seconds"] and again["epochs"] == 2
