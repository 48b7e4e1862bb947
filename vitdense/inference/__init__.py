"""Inference beyond a batch: scenes larger than memory, read and written by windows (``scenes``).

The per-image inference settings (whole / slide, flip, multi-scale, detection tiles) drive val, test and predict
alike, so they live with the tasks (``vitdense.tasks.inference``); they are importable from here too, where they
were before.
"""

from vitdense.tasks.inference import (
    DetectionInferenceConfig,
    InferenceConfig,
    check_detection_inference_config,
    check_inference_config,
    check_window_stride,
    infer_detections,
    infer_logits,
    slide_logits,
    tile_windows,
)

__all__ = [
    "DetectionInferenceConfig",
    "InferenceConfig",
    "check_detection_inference_config",
    "check_inference_config",
    "check_window_stride",
    "infer_detections",
    "infer_logits",
    "slide_logits",
    "tile_windows",
]
