"""Connected regions of class masks: what ``inference.keep_largest`` measures in the training masks (is a class one
solid object?) and how it reshapes a prediction (the largest region of a class, holes filled).

Regions are 8-connected (pixels touching at a corner belong together); a hole is a part of the rest of the image that
the region encloses, 4-connected (it cannot leak out between two diagonal pixels of the region)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def holes(region: np.ndarray) -> np.ndarray:
    """The pixels outside the bool mask ``region`` that it encloses (not reachable from the image border)."""
    outside = np.pad((~region).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)  # the padded border reaches every outside pixel but the holes
    return outside[1:-1, 1:-1] == 1


def solid_object(region: np.ndarray) -> bool:
    """Whether the bool mask ``region`` is one 8-connected region without holes."""
    count = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)[0] - 1
    return count == 1 and not holes(region).any()


def class_objects(mask: np.ndarray, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class of one class-id ``mask``: its labelled pixels, and whether it is one solid object there (1 or 0)."""
    labelled = mask[mask != ignore_index].astype(np.int64)
    pixels = np.bincount(labelled, minlength=num_classes)[:num_classes]
    solid = np.zeros(num_classes, np.int64)
    for c in np.flatnonzero(pixels):
        solid[c] = solid_object(mask == c)
    return pixels, solid


def keep_largest(classes: np.ndarray, scores: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """``classes`` (H, W) class ids with each class of ``keep`` one solid object: its largest 8-connected region,
    holes filled with it; the pixels of its other regions take their next most likely class by ``scores`` (K, H, W).
    The classes of ``keep`` are reshaped in that order; a class not predicted stays absent."""
    out = classes.copy()
    for k in keep:
        region = out == k
        count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
        if count > 2:  # background and more than one region
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            dropped = (labels > 0) & (labels != largest)
            others = scores[:, dropped].copy()
            others[k] = -np.inf
            out[dropped] = others.argmax(0)
            region = labels == largest
        if count > 1:
            out[holes(region)] = k
    return out
