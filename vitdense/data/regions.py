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


def class_pixels(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Per class of one class-id ``mask``: its labelled pixels (``ignore_index`` left out)."""
    labelled = mask[mask != ignore_index].astype(np.int64)
    return np.bincount(labelled, minlength=num_classes)[:num_classes]


def class_objects(
    mask: np.ndarray, num_classes: int, ignore_index: int, regions: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per class of one class-id ``mask``: its labelled pixels, and whether it is one solid object there (1 or 0;
    all 0 without ``regions``, which skips finding them)."""
    pixels = class_pixels(mask, num_classes, ignore_index)
    solid = np.zeros(num_classes, np.int64)
    for c in np.flatnonzero(pixels) if regions else ():
        solid[c] = solid_object(mask == c)
    return pixels, solid


def keep_largest(classes: np.ndarray, scores: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """``classes`` (H, W) class ids with each class of ``keep`` one solid object: its largest 8-connected region,
    holes filled with it; the pixels of its other regions take their next most likely class by ``scores`` (K, H, W).
    A class not predicted stays absent.

    With several classes listed, a dropped pixel may be most likely another listed class and land apart from that
    class's region; the classes are reshaped again until none has a second region, and a pixel never returns to a
    listed class it was dropped from, so every listed class ends as one region whatever the order of ``keep`` (only
    where every class is listed can a pixel run out of classes: it then stays in the last one)."""
    out = classes.copy()
    keep = [int(k) for k in keep]
    dropped_from: dict[int, np.ndarray] = {}  # class -> the pixels once dropped from it
    changed = True
    while changed:  # ends: a pixel that moves is banned from the class it left, for good
        changed = False
        for k in keep:
            count, labels, stats, _ = cv2.connectedComponentsWithStats((out == k).astype(np.uint8), connectivity=8)
            if count <= 2:  # background and at most one region
                continue
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            dropped = (labels > 0) & (labels != largest)
            dropped_from[k] = dropped_from.get(k, np.zeros_like(dropped)) | dropped
            others = scores[:, dropped].copy()
            for j, banned in dropped_from.items():
                others[j, banned[dropped]] = -np.inf
            moved = np.where(np.isfinite(others.max(0)), others.argmax(0), k)  # no class left: it stays
            out[dropped] = moved
            changed |= bool((moved != k).any())
    for k in keep:
        region = out == k
        if region.any():
            out[holes(region)] = k
    return out
