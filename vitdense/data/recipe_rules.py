"""Recipe choices that the training data decides at fit time (``auto`` in the segmentation template).

Each rule is a pure function of statistics of the training split, returns its choice and a one-line reason, and is
printed when fitting. The rules and their thresholds come from the across-domain benchmark (benchmarks/recipes.py
over the domains of benchmarks/domains.py; docs/recipes.md): they are stated here so a user can predict them.

- ``loss.class_weights: auto``: square root of median-frequency weights when some class holds less than
  ``RARE_SHARE`` (1%) of the labelled training pixels, else none. Weighting makes a rare class worth learning under
  a short budget (CamVid: +3.3 mIoU); where every class already holds a fair share of the pixels it only trades
  precision for recall: the boundaries of the up-weighted classes spread into the dominant one.
- ``data.scale_range: auto``: the random rescale of training crops goes down to ``crop / short side`` of the
  median training image (clamped to [``MIN_SCALE``, 1]) and up to ``MAX_SCALE``: a crop at the smallest scale
  is still filled by image, and an image smaller than the crop is never shrunk further (thin structures of small
  images vanish when halved; evaluation runs at full resolution).
- detection ``data.scale_range: auto``: no random rescale ([1, 1]) when the objects of each class keep about one
  size in the training images (``box_scale_rule``: the spread of log2 object size over the image's long side, per
  class, averaged over the boxes, under ``FIXED_SCALE_SPREAD`` octaves: microscopy, scans, fixed-altitude aerial
  imagery), else ``DETECTION_SCALE_RANGE``. Zooming teaches sizes a fixed-scale test set never shows, and shrinks
  its smallest objects under the finest anchors; photos come at every scale, and the zoom is what covers them.
- detection ``head.anchor_scale: auto``: the largest of ``ANCHOR_SCALES`` whose smallest anchor still matches the
  small training boxes (``anchor_scale_rule``: at most ``ANCHOR_MATCH`` x the 10th percentile of the box sides at the
  training input size). A box well under the smallest anchor overlaps every anchor too little to be a positive for
  the proposal or one-stage head; objects are then learned from one forced match each, or not at all.
- segmentation ``inference.keep_largest: auto``: the classes that are one solid object in every training mask that
  holds them (``single_object_rule``: one 8-connected region without holes, in at least ``MIN_OBJECT_MASKS`` masks):
  a skin lesion, an organ, a salient object. Their predictions then keep the largest region, holes filled
  (nnU-Net's largest-component post-processing, decided here by the training masks instead of by validation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RARE_SHARE = 0.01  # a class below this share of the labelled training pixels counts as rare
MIN_SCALE, MAX_SCALE = 0.5, 2.0  # the template's fixed scale_range, and the bounds of the automatic one
DETECTION_SCALE_RANGE = (0.5, 1.5)  # the detection template's random long-side scale where objects vary in size
FIXED_SCALE_SPREAD = 0.4  # octaves: under this, objects of a class keep one size (benchmarks/small_tasks.py sets)
ANCHOR_SCALES = (4.0, 2.0, 1.0)  # head.anchor_scale: the template's (detectron2's 32-512 px on P2-P6), then finer
ANCHOR_MATCH = 2**0.5  # a square anchor of side <= sqrt(2) s overlaps a centred square box of side s at IoU >= 0.5
SMALL_BOX_QUANTILE = 0.1  # the box side the smallest anchor must match: the 10th percentile of the training boxes
MIN_OBJECT_MASKS = 20  # a class must be one solid object in at least this many training masks (and in all of them)
AUTO = "auto"


@dataclass(frozen=True)
class Choice:
    """What a rule chose, and why (printed at fit time)."""

    value: Any
    reason: str


def class_weight_rule(pixels: np.ndarray, names: list[str] | None = None) -> Choice:
    """``sqrt_median_frequency`` when some class present in training holds < ``RARE_SHARE`` of the labelled pixels,
    else ``None`` (unweighted cross-entropy). ``pixels``: per class, its labelled training pixels.

    Classes with no training pixels are named as such in the reason: no weight can teach them, and they are neither
    rare nor ">= 1%" (a class table with 15 of 21 classes unused in train is said, not hidden behind "every class")."""
    pixels = np.asarray(pixels, dtype=np.float64)
    total = pixels.sum()
    if total <= 0:
        return Choice(None, "no labelled training pixels")
    names = names or [f"class_{i}" for i in range(len(pixels))]
    share = pixels / total
    absent = _listed([names[i] for i in np.flatnonzero(pixels == 0)])
    none = f"{absent[0]} of {len(pixels)} classes have no training pixels ({absent[1]})" if absent[0] else ""
    rare = [i for i in np.argsort(share, kind="stable") if 0 < share[i] < RARE_SHARE]
    if rare:
        listed = ", ".join(f"{names[i]} {100 * share[i]:.2g}%" for i in rare[:4]) + (", ..." if len(rare) > 4 else "")
        reason = f"{len(rare)} class(es) under {100 * RARE_SHARE:g}% of the training pixels: {listed}"
        return Choice("sqrt_median_frequency", reason + (f"; {none}" if none else ""))
    rarest = int(np.argmin(np.where(share > 0, share, np.inf)))
    rarest_text = f"(rarest: {names[rarest]} {100 * share[rarest]:.2g}%)"
    if none:
        present = len(pixels) - absent[0]
        return Choice(None, f"{none}; the {present} other class(es) each hold >= {100 * RARE_SHARE:g}% of the training "
                            f"pixels {rarest_text}")  # fmt: skip
    return Choice(None, f"every class holds >= {100 * RARE_SHARE:g}% of the training pixels {rarest_text}")


def _listed(names: list[str], most: int = 8) -> tuple[int, str]:
    """How many names, and the first ``most`` of them joined (", ..." when there are more)."""
    return len(names), ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def scale_range_rule(short_sides: list[int] | np.ndarray, crop_size: int) -> Choice:
    """(low, ``MAX_SCALE``) with low = crop / median short side of the training images, clamped to
    [``MIN_SCALE``, 1]."""
    sides = np.asarray(short_sides, dtype=np.float64)
    if sides.size == 0:
        return Choice((MIN_SCALE, MAX_SCALE), "no training images to measure")
    median = float(np.median(sides))
    low = round(min(1.0, max(MIN_SCALE, crop_size / median)), 2)
    why = "keeps the crop inside the image" if low > MIN_SCALE else "is the default"
    return Choice((low, MAX_SCALE), f"median short side {median:.0f} px, crop {crop_size}: the smallest scale {why}")


def box_scale_rule(relative_sides: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> Choice:
    """Detection ``scale_range``: ``(1.0, 1.0)`` when objects keep one size per class, else ``DETECTION_SCALE_RANGE``.

    ``relative_sides``: per training box, ``sqrt(width * height)`` over its image's long side; ``labels``: its
    class. The spread is the standard deviation of ``log2`` of the relative side within each class with two boxes or
    more, averaged over those boxes (a class of many boxes counts more), in octaves."""
    sides, labels = np.asarray(relative_sides, np.float64), np.asarray(labels)
    keep = sides > 0
    sides, labels = sides[keep], labels[keep]
    measured_classes, spreads, counts = [], [], []
    for label in np.unique(labels):
        mine = np.log2(sides[labels == label])
        if mine.size >= 2:
            measured_classes.append(int(label))
            spreads.append(float(mine.std()))
            counts.append(mine.size)
    if not counts:
        return Choice(DETECTION_SCALE_RANGE, "too few training boxes to measure their sizes: the default")
    spread = float(np.average(spreads, weights=counts))
    worst = int(np.argmax(spreads))
    name = names[measured_classes[worst]] if names else f"class {measured_classes[worst]}"
    measured = f"object size spreads {spread:.2f} octaves within a class over {sum(counts)} boxes (most: {name} "
    measured += f"{spreads[worst]:.2f})"
    if spread < FIXED_SCALE_SPREAD:
        return Choice((1.0, 1.0), f"{measured}, under {FIXED_SCALE_SPREAD}: one fixed scale, no zoom")
    return Choice(DETECTION_SCALE_RANGE, f"{measured}, >= {FIXED_SCALE_SPREAD}: objects at many scales, zoom")


def anchor_scale_rule(sides: np.ndarray, smallest_anchor_per_scale: float) -> Choice:
    """Detection ``head.anchor_scale``: the largest of ``ANCHOR_SCALES`` whose smallest anchor (``scale x
    smallest_anchor_per_scale`` px) is at most ``ANCHOR_MATCH`` x the ``SMALL_BOX_QUANTILE`` quantile of ``sides``
    (per training box, ``sqrt(width * height)`` in pixels at the training input size); the finest scale when none is.
    """
    sides = np.asarray(sides, np.float64)
    sides = sides[sides > 0]
    default = ANCHOR_SCALES[0]
    if sides.size == 0:
        return Choice(default, "no training boxes to measure: the default")
    small = float(np.quantile(sides, SMALL_BOX_QUANTILE))
    fits = [s for s in ANCHOR_SCALES if s * smallest_anchor_per_scale <= ANCHOR_MATCH * small]
    scale = fits[0] if fits else ANCHOR_SCALES[-1]
    measured = (f"{100 * SMALL_BOX_QUANTILE:g}% of the {sides.size} training boxes are under {small:.1f} px at the "
                f"input size, the smallest anchor {scale * smallest_anchor_per_scale:g} px")  # fmt: skip
    if scale == default:
        return Choice(scale, f"{measured}: the default")
    if not fits:
        return Choice(scale, f"{measured}, the finest anchors offered: smaller objects need a larger image_size")
    return Choice(scale, f"{measured} (the default's {default * smallest_anchor_per_scale:g} px would miss them)")


def single_object_rule(present: np.ndarray, solid: np.ndarray, names: list[str] | None = None) -> Choice:
    """Segmentation ``inference.keep_largest``: the ids of the classes that are one solid object (one 8-connected
    region without holes) in every training mask that holds them, and in at least ``MIN_OBJECT_MASKS`` masks.

    ``present``: per class, the training masks holding it; ``solid``: those where it is one solid object."""
    present, solid = np.asarray(present, np.int64), np.asarray(solid, np.int64)
    names = names or [f"class_{i}" for i in range(len(present))]
    chosen = [int(k) for k in np.flatnonzero((present >= MIN_OBJECT_MASKS) & (solid == present))]
    if chosen:
        listed = ", ".join(f"{names[k]} ({present[k]} masks)" for k in chosen)
        return Choice(chosen, f"one solid object in every training mask that holds it: {listed}")
    seen = np.flatnonzero(present > 0)
    if seen.size == 0:
        return Choice([], "no labelled training masks")
    best = max(seen, key=lambda k: (solid[k] / present[k], present[k]))
    closest = f"closest: {names[best]}, one solid object in {solid[best]} of {present[best]} masks"
    return Choice([], f"no class is one solid object in every one of >= {MIN_OBJECT_MASKS} training masks ({closest})")
