"""Segmentation inference modes: whole, sliding window, flip and multi-scale, shared by val, test and predict."""

import resource

import pytest
import torch

from tests.tiny import VIT_D2_W32
from vitdense import SegmentationTask
from vitdense.tasks.inference import infer_logits, slide_logits


def task_with(inference: dict | None = None, **kwargs) -> SegmentationTask:
    torch.manual_seed(0)
    task = SegmentationTask(backbone=VIT_D2_W32, num_classes=4, pretrained=False, img_size=64,
                            head={"channels": 8, "aux_weight": 0.0}, inference=inference, **kwargs)  # fmt: skip
    return task.eval()


def test_slide_with_the_crop_at_the_image_size_is_whole_inference() -> None:
    task = task_with()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        whole = task(images)
        assert torch.equal(slide_logits(task, images, (64, 96), (32, 32)), whole)
        assert torch.equal(slide_logits(task, images, (128, 128), (64, 64)), whole)  # crop larger than the image


def test_slide_averages_overlapping_windows_and_covers_every_pixel() -> None:
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:  # a "model" whose logit is the window's index, so the mean shows
        calls.append(tuple(x.shape[-2:]))
        return torch.full((x.shape[0], 1, *x.shape[-2:]), float(len(calls)))

    out = slide_logits(forward, torch.zeros(1, 3, 40, 50), crop=(20, 30), stride=(15, 15))
    # rows at y 0, 15 and 30 -> 20, columns at x 0, 15 and 30 -> 20: the last window of each is shifted inside
    assert calls == [(20, 30)] * 9
    assert out[0, 0, 0, 0] == 1  # only the first window
    assert out[0, 0, 0, 20] == pytest.approx((1 + 2 + 3) / 3)  # the three windows of the first row overlap here
    assert out[0, 0, 30, 25] == pytest.approx((4 + 5 + 6 + 7 + 8 + 9) / 6)
    assert out[0, 0, 39, 49] == 9  # only the last window
    assert torch.isfinite(out).all()


def test_flip_and_scales_average_probabilities() -> None:
    task = task_with()
    images = torch.rand(1, 3, 64, 64)
    cfg = {"mode": "whole", "crop": None, "stride": None, "flip": True, "scales": [1.0, 0.5]}
    with torch.no_grad():
        out = infer_logits(task, images, cfg, (64, 64))
        views = [task(images), task(images.flip(-1)).flip(-1)]
        half = torch.nn.functional.interpolate(images, (32, 32), mode="bilinear", align_corners=False)
        views += [task(half), task(half.flip(-1)).flip(-1)]
        from vitdense.models.resize import resize_bilinear

        expected = torch.stack([resize_bilinear(v, (64, 64)).softmax(1) for v in views]).mean(0)
    torch.testing.assert_close(out.exp(), expected)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 64, 64))


def test_inference_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"inference\.mode"):
        task_with({"mode": "tiles"})
    with pytest.raises(ValueError, match=r"inference\.crop"):
        task_with({"mode": "slide", "crop": [64]})
    with pytest.raises(ValueError, match=r"inference\.scales"):
        task_with({"scales": []})
    with pytest.raises(ValueError, match="Unknown inference key"):
        task_with({"flips": True})


def test_eval_step_uses_the_configured_inference() -> None:
    """Val/test/predict all go through logits_per_size: slide there changes what the model sees."""
    whole, slide = task_with(), task_with({"mode": "slide", "crop": [32, 32], "stride": [16, 16]})
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ((_, whole_logits),) = whole.logits_per_size(images, None, [(64, 64)])
        ((_, slide_logits_),) = slide.logits_per_size(images, None, [(64, 64)])
        expected = slide_logits(slide, images, (32, 32), (16, 16))
    torch.testing.assert_close(slide_logits_, expected)
    assert not torch.allclose(whole_logits, slide_logits_)


@pytest.mark.slow
def test_a_2048x1024_frame_through_vit_base_at_crop_512_on_cpu() -> None:
    """Memory is bounded by the crop: 8 windows of 512x512 through a ViT-B UPerNet, not one 2048x1024 forward."""
    task = SegmentationTask(backbone="vit_base_patch16_224", num_classes=19, pretrained=False, img_size=512,
                            head={"channels": 64, "aux_weight": 0.0},
                            inference={"mode": "slide", "crop": [512, 512], "stride": [512, 512]}).eval()  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        ((_, logits),) = task.logits_per_size(torch.rand(1, 3, 1024, 2048), None, [(1024, 2048)])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB (before the forward {before / 1024:.0f} MiB)")
    assert logits.shape == (1, 19, 1024, 2048) and torch.isfinite(logits).all()


def test_inference_is_set_from_the_command_line() -> None:
    from pathlib import Path

    from vitdense.cli.entry import main

    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    setting = "{mode: slide, crop: [48, 48], stride: [32, 32], flip: true, scales: [0.75, 1.0]}"
    cli = main(["--config", str(config), "--model.init_args.inference", setting], run=False)
    assert cli.model.inference_cfg == {"mode": "slide", "crop": [48, 48], "stride": [32, 32], "flip": True,
                                       "scales": [0.75, 1.0], "keep_largest": []}  # fmt: skip


def test_inference_from_the_command_line_wins_over_the_checkpoints(tmp_path, tiny_run) -> None:
    """`test --ckpt_path X --model.init_args.inference ...` scores with the given inference (LightningCLI would
    restore the checkpoint's). Slide with the crop at the image size scores as whole; flip + scales run (the slow
    quickstart test compares slide at a smaller crop)."""
    from vitdense.cli.entry import main

    config, ckpt = tiny_run(tmp_path, "segmentation")  # 32x32 synthetic images
    scores = {}
    for name, setting in [("whole", "{mode: whole}"), ("slide", "{mode: slide, crop: [32, 32], stride: [16, 16]}"),
                          ("tta", "{mode: whole, flip: true, scales: [1.0, 1.5]}")]:  # fmt: skip
        cli = main(["test", "--config", str(config), "--ckpt_path", str(ckpt),
                    "--model.init_args.inference", setting])  # fmt: skip
        assert cli.model.inference_cfg["mode"] == name.replace("tta", "whole")
        assert cli.model.inference_cfg["flip"] == (name == "tta")
        scores[name] = float(cli.trainer.callback_metrics["test/mIoU"])
    assert abs(scores["slide"] - scores["whole"]) < 1e-6 and scores["tta"] > 0


def test_predicted_masks_are_palette_pngs_of_class_ids(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from vitdense.tasks.segmentation import class_palette

    task = task_with()
    mask = torch.tensor([[0, 1], [2, 3]])
    (path,) = task.save_predictions([{"path": "photos/img_7.jpg", "mask": mask}], tmp_path)
    image = Image.open(path)
    assert path.name == "img_7.png" and image.mode == "P"
    assert np.array_equal(np.array(image), mask.numpy())  # the pixel values are the class ids
    assert image.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] == class_palette(4)


# ---- detection -------------------------------------------------------------------------------------------------------


def detector_with(**inference):
    from tests.tiny import PATCH8_VIT_D4
    from vitdense import DetectionTask

    torch.manual_seed(0)
    head = {"channels": 16, "score_thresh": 0.0, "detections_per_img": 1000}
    task = DetectionTask(backbone={**PATCH8_VIT_D4, "img_size": 64}, num_classes=3, head=head, inference=inference)
    with torch.no_grad():  # RetinaNet starts every score at 0.01: spread them, so that NMS has no ties to break
        task.detector.head.classification_head.cls_logits.weight.normal_(0, 0.5)
    return task.eval()


def as_rows(det: dict) -> list[tuple]:
    """Detections as sorted rows (label, score, box), to compare sets whatever their order."""
    rows = zip(det["labels"].tolist(), det["scores"].tolist(), det["boxes"].tolist(), strict=True)
    return sorted((k, round(s, 5), *[round(v, 3) for v in b]) for k, s, b in rows)


def test_detection_flip_is_flip_equivariant() -> None:
    task = detector_with(flip=True)
    image = torch.rand(3, 64, 96)
    with torch.no_grad():
        (plain,) = task([image])
        (flipped,) = task([image.flip(-1)])
    mirrored = {**flipped, "boxes": torch.stack([96 - flipped["boxes"][:, 2], flipped["boxes"][:, 1],
                                                96 - flipped["boxes"][:, 0], flipped["boxes"][:, 3]], 1)}  # fmt: skip
    assert len(plain["boxes"]) > 0 and as_rows(plain) == as_rows(mirrored)


def test_detection_tiles_of_a_repeated_image_find_each_copy() -> None:
    from torchvision.ops import batched_nms

    tile = torch.rand(3, 64, 64)
    task = detector_with(mode="tile", crop=[64, 64], stride=[64, 64])
    with torch.no_grad():
        (single,) = detector_with()([tile])
        (tiled,) = task([tile.repeat(1, 2, 2)])  # a 128x128 image of four copies
    # Each copy's boxes, moved to its corner, merged as the task merges views.
    shifted = [single["boxes"] + torch.tensor([x, y, x, y]) for y in (0, 64) for x in (0, 64)]
    boxes, scores, labels = torch.cat(shifted), single["scores"].repeat(4), single["labels"].repeat(4)
    keep = batched_nms(boxes, scores, labels, task.head_cfg["nms_thresh"])
    assert as_rows(tiled) == as_rows({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})


def test_detection_tile_as_large_as_the_image_is_whole() -> None:
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        (whole,) = detector_with()([image])
        (tiled,) = detector_with(mode="tile", crop=[64, 80])([image])
    assert as_rows(whole) == as_rows(tiled)


def test_bad_detection_inference_settings_name_the_key() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"inference\.mode: 'slide' is not one of 'whole', 'tile'"):
        detector_with(mode="slide")
    with pytest.raises(ValueError, match=r"inference.crop: \[64\] must be two positive sizes"):
        detector_with(mode="tile", crop=[64])


def test_every_accepted_window_setting_covers_every_pixel() -> None:
    """Any crop/stride the config accepts leaves no pixel uncovered (uncovered pixels would be 0/0 = NaN logits and
    objects missed by detection tiles); a stride larger than the crop is refused, naming the keys."""
    from itertools import product

    from vitdense.tasks.inference import tile_windows

    def ones(x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 1, *x.shape[-2:])

    for height, width, crop, stride in product((17, 32, 45, 100), (9, 33, 100), (8, 16, 32), (1, 5, 8, 16, 32)):
        if stride > crop:
            with pytest.raises(ValueError, match=r"inference\.stride: .* is larger than inference\.crop"):
                slide_logits(ones, torch.zeros(1, 3, height, width), (crop, crop), (stride, stride))
            with pytest.raises(ValueError, match=r"inference\.stride"):
                tile_windows(height, width, (crop, crop), (stride, stride))
            continue
        out = slide_logits(ones, torch.zeros(1, 3, height, width), (crop, crop), (stride, stride))
        assert torch.equal(out, torch.ones_like(out)), (height, width, crop, stride)
        covered = torch.zeros(height, width, dtype=torch.bool)
        ch, cw = min(crop, height), min(crop, width)
        for y, x in tile_windows(height, width, (crop, crop), (stride, stride)):
            covered[y : y + ch, x : x + cw] = True
        assert covered.all(), (height, width, crop, stride)


def test_a_stride_larger_than_the_crop_is_refused_when_the_task_is_built() -> None:
    with pytest.raises(ValueError, match=r"inference\.stride: \[48, 48\] is larger than inference\.crop: \[32, 32\]"):
        task_with({"mode": "slide", "crop": [32, 32], "stride": [48, 48]})
    # crop unset: the window is the backbone's img_size (64 here)
    with pytest.raises(ValueError, match=r"larger than inference\.crop: the default crop \[64, 64\]"):
        task_with({"mode": "slide", "stride": [80, 80]})
    task_with({"mode": "whole", "stride": [80, 80]})  # no windows in whole mode: the stride is not used


def test_detection_refuses_tiles_with_gaps_and_ignores_the_stride_when_whole() -> None:
    with pytest.raises(ValueError, match=r"inference\.stride: \[80, 80\] is larger than inference\.crop"):
        detector_with(mode="tile", crop=[64, 64], stride=[80, 80])
    task = detector_with(mode="whole", flip=True, stride=[200, 200])  # stride unused: one window per image
    with torch.no_grad():
        (det,) = task([torch.rand(3, 64, 96)])
    assert torch.isfinite(det["boxes"]).all()


def test_predictions_of_images_sharing_a_stem_are_all_kept(tmp_path) -> None:
    """a.jpg and a.png in one predict folder: each gets its own mask (named with its extension), none overwritten;
    writing a name twice raises instead of replacing the first file."""
    import numpy as np
    import yaml
    from PIL import Image

    from tests.fake_data import write_folder_dataset
    from vitdense.cli.entry import main

    root = write_folder_dataset(tmp_path / "data", num_classes=3, sizes=((32, 32),))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "a.png", "b.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(photos / name)
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": VIT_D2_W32, "head": {"channels": 8},
                                                                  "overlays": True}},
        "data": {"class_path": "SegmentationFolderDataModule",
                 "init_args": {"root": str(root), "crop_size": 32, "batch_size": 2, "predict_dir": str(photos)}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["predict", "--config", str(config)])
    (writer,) = [cb for cb in cli.trainer.callbacks if hasattr(cb, "output_dir")]
    assert writer.count == 3
    assert sorted(p.name for p in writer.output_dir.glob("*.png")) == ["a.jpg.png", "a.png.png", "b.png"]
    assert sorted(p.name for p in (writer.output_dir / "overlays").glob("*.png")) == ["a.jpg.png", "a.png.png", "b.png"]
    task = cli.model
    with pytest.raises(FileExistsError, match=r"'other/b\.tif' would overwrite .*b\.png"):
        task.save_predictions([{"path": "other/b.tif", "mask": torch.zeros(2, 2, dtype=torch.long)}], writer.output_dir)
