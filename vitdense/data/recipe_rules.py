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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RARE_SHARE = 0.01  # a class below this share of the labelled training pixels counts as rare
MIN_SCALE, MAX_SCALE = 0.5, 2.0  # the template's fixed scale_range, and the bounds of the automatic one
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
