"""No detector returns a box of zero width or height (one regressed off the image and clipped flat at its border), in
PyTorch and in the exported ONNX graph alike; everything else it returns is torchvision's."""

from pathlib import Path
from unittest import mock

import pytest
import torch
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.fcos import FCOS

from tests.tiny import PATCH8_VIT_D2
from vitdense import DetectionTask

TORCHVISION = {"retinanet": RetinaNet, "fcos": FCOS, "faster_rcnn": FasterRCNN}


def flat_box_task(name: str) -> DetectionTask:
    """A tiny detector whose head makes some boxes flat: varied scores, and for RetinaNet every first anchor's box
    moved 10 heights up (clipped to the image: ``[x1, 0, x2, 0]``), for FCOS top and bottom distances that the head's
    ReLU often makes 0, for Faster R-CNN class 0's boxes moved 10 heights up."""
    head = {"name": name, "channels": 64 if name == "fcos" else 32, "score_thresh": 0.005, "roi_batch_size": 32,
            "box_head_width": 64, "detections_per_img": 1000}  # fmt: skip
    task = DetectionTask(backbone=PATCH8_VIT_D2, num_classes=3, head=head)
    torch.manual_seed(0)
    with torch.no_grad():
        for param_name, p in task.detector.named_parameters():
            if not param_name.startswith("backbone.backbone") and p.dim() > 1:
                p.normal_(0, 0.01 if "bbox_" in param_name else 0.05)
        if name == "retinanet":
            task.detector.head.regression_head.bbox_reg.bias[1] = -10.0  # (anchor 0, dy): a channel per anchor x 4
        elif name == "fcos":
            task.detector.head.regression_head.bbox_reg.bias.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))  # l, t, r, b
        else:
            task.detector.roi_heads.box_predictor.bbox_pred.bias[4 * 1 + 1] = -10.0  # class 0 (1 after background)
    return task.eval()


def flat(boxes: torch.Tensor) -> torch.Tensor:
    """Which boxes have zero width or height."""
    return (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])


def torchvision_detections(task: DetectionTask, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """What torchvision's own post-processing of the same head outputs returns."""
    own = TORCHVISION[task.head_cfg["name"]]
    if own is FasterRCNN:  # its RoI heads already drop boxes under 1e-2 px
        with torch.no_grad():
            return task(image[None])[0]
    with mock.patch.object(type(task.detector), "postprocess_detections", own.postprocess_detections), torch.no_grad():
        return task(image[None])[0]


@pytest.mark.parametrize("name", ["retinanet", "fcos", "faster_rcnn"])
def test_no_detector_returns_a_flat_box(name: str) -> None:
    task = flat_box_task(name)
    image = torch.rand(3, 128, 192)
    with torch.no_grad():
        (ours,) = task(image[None])
    assert len(ours["boxes"]) > 0 and not flat(ours["boxes"]).any(), ours["boxes"][flat(ours["boxes"])][:3]
    # The rest is torchvision's: its detections less the flat ones, in the same order, and where torchvision reached
    # head.detections_per_img, the places the flat boxes took go to the next boxes.
    theirs = torchvision_detections(task, image)
    flats = flat(theirs["boxes"])
    if name != "faster_rcnn":
        assert flats.any()  # they were there
    if name == "retinanet":
        assert bool((theirs["boxes"][flats][:, [1, 3]] == 0).all())  # [x1, 0, x2, 0], as reported
    kept = int((~flats).sum())
    assert len(ours["boxes"]) == (1000 if len(theirs["boxes"]) == 1000 else kept)
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(ours[key][:kept], theirs[key][~flats])


# ~13 s each on 2 cores (the export); FCOS's graph is also checked against the task in test_export_detection.py, and
# RetinaNet's only here in the default suite: at the sizes that file uses too (one not a multiple of the stride), and
# its metadata.
@pytest.mark.parametrize("name", ["retinanet", pytest.param("fcos", marks=pytest.mark.slow)])
def test_the_onnx_graph_returns_no_flat_box(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tests.test_export_detection import check_at_sizes, check_metadata
    from vitdense.deploy.export import export_onnx
    from vitdense.deploy.onnx_runner import OnnxModel

    task = flat_box_task(name)
    path = export_onnx(task, tmp_path / name)
    check_at_sizes(task, path, [(128, 192), (96, 64), (50, 130)])  # the graph's detections are the task's
    check_metadata(task, path)
    model = OnnxModel(path)
    for size in [(128, 192), (96, 64)]:
        image = torch.rand(3, *size)
        found = model.predict(image.permute(1, 2, 0).numpy())
        assert len(found["boxes"]) > 0 and not flat(torch.from_numpy(found["boxes"])).any()
        assert flat(torchvision_detections(task, image)["boxes"]).any()  # torchvision's would have had some
