"""Test-time inference: segmentation (whole-image or sliding-window, flip and multi-scale averaging) and detection
(whole or tiled, flip, merged by NMS).

One setting, ``model.init_args.inference``, serves val, test and predict:

- ``mode: whole`` runs each image at once; ``slide`` runs overlapping ``crop`` windows every ``stride`` pixels
  (mmseg's ``slide_inference``: windows at the border are shifted inside the image, logits are summed and divided by
  the number of windows covering each pixel). Memory is then bounded by the crop, not the image, and a ViT sees the
  token grid it was trained on.
- ``flip: true`` adds the horizontally flipped image; ``scales: [0.75, 1.0, 1.25]`` runs the image resized by each
  factor. Their softmax probabilities, resized back to the image, are averaged; the result is returned as log
  probabilities (valid logits: their softmax is the average, their cross-entropy its negative log).
- ``keep_largest: [lesion]`` (class names or ids) makes each listed class one solid object in every prediction: its
  largest region, holes filled; its other regions take their next most likely class (``vitdense.data.regions``).
  ``auto``: the classes that are one solid object in every training mask (``recipe_rules.single_object_rule``),
  chosen when fitting and kept in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypedDict

import torch
import torch.nn.functional as F

from vitdense.models.resize import resize_bilinear

Logits = Callable[[torch.Tensor], torch.Tensor]


class InferenceConfig(TypedDict, total=False):
    """Test-time settings under ``model.init_args.inference``.

    Keys: ``mode`` (whole | slide), ``crop`` ([h, w] window of slide; default the backbone's img_size), ``stride``
    ([h, w] between windows; default 2/3 of the crop, as mmseg's 512/341), ``flip`` (add the horizontal flip),
    ``scales`` (image resize factors, averaged), ``keep_largest`` (classes kept as their largest solid region, or
    ``auto``).
    """

    mode: Literal["whole", "slide"]
    crop: list[int] | None
    stride: list[int] | None
    flip: bool
    scales: list[float]
    keep_largest: list[int | str] | Literal["auto"]


INFERENCE_DEFAULTS: InferenceConfig = {
    "mode": "whole", "crop": None, "stride": None, "flip": False, "scales": [1.0], "keep_largest": [],
}  # fmt: skip


def check_window_stride(crop: tuple[int, int], stride: tuple[int, int], default_crop: bool = False) -> None:
    """Windows every ``stride`` pixels cover the image only when the stride is at most the crop: refuse gaps (their
    pixels would average zero windows: NaN logits, objects missed), naming the keys."""
    if stride[0] > crop[0] or stride[1] > crop[1]:
        source = f"the default crop {list(crop)} (the backbone's img_size)" if default_crop else f"{list(crop)}"
        raise ValueError(
            f"inference.stride: {list(stride)} is larger than inference.crop: {source}, so windows would leave "
            "strips of the image that no window covers. Use a stride at most the crop (e.g. 2/3 of it), or leave "
            "inference.stride unset."
        )


def _check_modes_and_windows(cfg: dict, modes: tuple[str, str], default_crop: tuple[int, int] | None, what: str = ""):
    """The mode is one of ``modes`` (whole, then the windowed one), crop and stride are sizes, and windows leave no
    gaps."""
    if cfg["mode"] not in modes:
        raise ValueError(f"inference.mode: '{cfg['mode']}' is not one of {', '.join(repr(m) for m in modes)}{what}.")
    for key in ("crop", "stride"):
        value = cfg[key]
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise ValueError(f"inference.{key}: {value} must be two positive sizes [height, width].")
    crop = cfg["crop"] or default_crop
    if cfg["mode"] == modes[1] and cfg["stride"] is not None and crop is not None:
        check_window_stride(tuple(crop), tuple(cfg["stride"]), default_crop=not cfg["crop"])


def check_inference_config(cfg: dict, default_crop: tuple[int, int] | None = None) -> None:
    """Reject settings that cannot run, naming the key; ``default_crop``: the window size when ``crop`` is unset."""
    _check_modes_and_windows(cfg, ("whole", "slide"), default_crop)
    if not cfg["scales"] or min(cfg["scales"]) <= 0:
        raise ValueError(f"inference.scales: {cfg['scales']} must be a non-empty list of positive factors.")
    keep = cfg.get("keep_largest") or []
    if keep != "auto" and (isinstance(keep, str) or not all(isinstance(k, int | str) for k in keep)):
        raise ValueError(f"inference.keep_largest: {keep!r} must be 'auto' or a list of class names or ids.")


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Starts of ``crop`` windows every ``stride`` pixels along a side of ``size``, the last shifted inside it
    (mmseg's slide positions); one window when the side is at most the crop. The one formula of slide_logits,
    tile_windows, scenes and the ONNX runner."""
    crop = min(crop, size)
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [min(i * stride + crop, size) - crop for i in range(count)]


def slide_logits(forward: Logits, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Logits of ``images`` (B, 3, H, W) from ``crop`` windows every ``stride`` pixels, averaged where they overlap.

    A side shorter than the crop is run whole. With the crop equal to the image this is one window: ``forward``
    itself. A stride larger than the crop is refused (it would leave pixels no window covers).
    """
    check_window_stride(crop, stride)
    height, width = images.shape[-2:]
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    total = count = None
    for y1 in window_starts(height, crop_h, stride[0]):
        for x1 in window_starts(width, crop_w, stride[1]):
            y2, x2 = y1 + crop_h, x1 + crop_w
            logits = forward(images[:, :, y1:y2, x1:x2])
            if total is None or count is None:
                total = logits.new_zeros(*logits.shape[:2], height, width)
                count = logits.new_zeros(1, 1, height, width)
            total[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    assert total is not None and count is not None  # rows, cols >= 1: at least one window
    return total / count


def windows(cfg: dict, default_crop: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The slide window's ``(crop, stride)``: ``inference.crop`` else ``default_crop`` (the training crop);
    ``inference.stride`` else 2/3 of the crop."""
    crop = tuple(int(v) for v in (cfg.get("crop") or default_crop))
    stride = tuple(int(v) for v in (cfg.get("stride") or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))))
    return (crop[0], crop[1]), (stride[0], stride[1])


def infer_logits(forward: Logits, images: torch.Tensor, cfg: dict, default_crop: tuple[int, int]) -> torch.Tensor:
    """Logits (B, K, H, W) of ``images`` by the configured mode, flips and scales (see the module docstring)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        if cfg["mode"] == "whole":
            return forward(x)
        return slide_logits(forward, x, *windows(cfg, default_crop))

    scales, flip = [float(s) for s in cfg["scales"]], bool(cfg["flip"])
    if scales == [1.0] and not flip:
        return run(images)
    height, width = images.shape[-2:]
    probs = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = (
            images if size == (height, width) else F.interpolate(images, size, mode="bilinear", align_corners=False)
        )
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            logits = run(view)
            logits = logits.flip(-1) if flipped else logits
            p = resize_bilinear(logits, (height, width)).softmax(1)
            probs = p if probs is None else probs + p
    assert probs is not None  # scales is not empty (check_inference_config)
    return (probs / (len(scales) * (2 if flip else 1))).clamp_min(1e-12).log()


# ---- detection -----------------------------------------------------------------------------------------------------

Detect = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


class DetectionInferenceConfig(TypedDict, total=False):
    """Test-time detection settings under ``model.init_args.inference``.

    Keys: ``mode`` (whole | tile: overlapping ``crop`` tiles every ``stride`` pixels, for images far larger than
    the training size), ``crop`` ([h, w]; default the backbone's img_size), ``stride`` ([h, w]; default 4/5 of the
    crop: tiles overlap by a fifth), ``flip`` (add the horizontally flipped image). The boxes of every tile and view
    are merged by per-class NMS at the head's ``nms_thresh``.
    """

    mode: Literal["whole", "tile"]
    crop: list[int] | None
    stride: list[int] | None
    flip: bool


DETECTION_INFERENCE_DEFAULTS: DetectionInferenceConfig = {"mode": "whole", "crop": None, "stride": None, "flip": False}


def check_detection_inference_config(cfg: dict, default_crop: tuple[int, int] | None = None) -> None:
    """Reject settings that cannot run, naming the key; ``default_crop``: the tile size when ``crop`` is unset."""
    _check_modes_and_windows(cfg, ("whole", "tile"), default_crop, " (detection)")


def tile_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of ``crop`` windows every ``stride`` pixels covering the image, the last ones shifted inside
    it (mmseg's slide positions); a side shorter than the crop is one window. A stride larger than the crop is
    refused (objects in the strips between tiles would be missed)."""
    check_window_stride(crop, stride)
    return [(y, x) for y in window_starts(height, crop[0], stride[0]) for x in window_starts(width, crop[1], stride[1])]


def infer_detections(
    detect: Detect, images: list[torch.Tensor], cfg: dict, default_crop: tuple[int, int], nms_thresh: float, limit: int
) -> list[dict[str, torch.Tensor]]:
    """Detections of each image by the configured mode and flip, merged by per-class NMS (at most ``limit``)."""
    from torchvision.ops import batched_nms

    if cfg["mode"] == "whole" and not cfg["flip"]:
        return detect(images)
    out = []
    for image in images:
        height, width = image.shape[-2:]
        if cfg["mode"] == "tile":
            crop = tuple(cfg["crop"] or default_crop)
            stride = tuple(cfg["stride"] or (max(1, crop[0] * 4 // 5), max(1, crop[1] * 4 // 5)))
        else:  # whole image (with flip): one window
            crop = stride = (height, width)
        windows = tile_windows(height, width, crop, stride)
        crop_h, crop_w = min(crop[0], height), min(crop[1], width)
        parts = []
        for flipped in (False, True) if cfg["flip"] else (False,):
            view = image.flip(-1) if flipped else image
            tiles = [view[:, y : y + crop_h, x : x + crop_w] for y, x in windows]
            for (y, x), det in zip(windows, detect(tiles), strict=True):
                boxes = det["boxes"] + det["boxes"].new_tensor([x, y, x, y])
                if flipped:
                    boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
                parts.append({**det, "boxes": boxes})
        merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        keep = batched_nms(merged["boxes"], merged["scores"], merged["labels"], nms_thresh)[:limit]
        out.append({key: value[keep] for key, value in merged.items()})
    return out
