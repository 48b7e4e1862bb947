"""Anti-aliased circles, elongated rectangles and triangles for the synthetic classification and detection data.

Made to be learnt by a small ViT from scratch in minutes: light shapes on a darkened textured background (with both
colours random, telling shape from background is itself a relation slow to learn from a few hundred images), and
rectangles clearly longer than wide (a square differs from a circle only at its corners). Colour carries no class
information.
"""

from __future__ import annotations

import cv2
import numpy as np

from vitdense.data.segmentation import _background

SHAPE_NAMES = ["circle", "rectangle", "triangle"]
_SUPERSAMPLE = 4


def shape_coverage(rng: np.random.Generator, label: int, centre: tuple[float, float], extent: float, size: int):
    """Draw one shape at 4x resolution and shrink it, giving anti-aliased edges.

    Args:
        rng: Random generator for the shape's aspect ratio and orientation.
        label: Index into ``SHAPE_NAMES``: circle (radius ``extent``), rectangle (half long side ``extent``, aspect
            0.35-0.65, horizontal or vertical) or triangle (circumradius ``1.1 * extent``, pointing up or down,
            centred on ``centre``).
        centre: ``(x, y)`` centre in pixels.
        extent: Half the shape's size in pixels.
        size: Image side in pixels.

    Returns:
        ``(size, size)`` float32 coverage in [0, 1]; the shape lies within ``extent`` of ``centre`` (triangles within
        ``1.05 * extent``).
    """
    s = _SUPERSAMPLE
    canvas = np.zeros((size * s, size * s), np.uint8)
    cx, cy, r = centre[0] * s, centre[1] * s, extent * s
    if label == 0:
        cv2.circle(canvas, (round(cx), round(cy)), round(r), 255, thickness=-1)
    elif label == 1:
        half = (r, r * rng.uniform(0.35, 0.65))
        hw, hh = half if rng.random() < 0.5 else half[::-1]
        cv2.rectangle(canvas, (round(cx - hw), round(cy - hh)), (round(cx + hw), round(cy + hh)), 255, thickness=-1)
    else:
        start = -np.pi / 2 + rng.choice([0.0, np.pi])
        angles = start + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.15, 0.15, size=3)
        radius = 1.1 * r
        # the base lies radius / 2 from the circumcentre: shift by radius / 4 to centre the triangle vertically
        points = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1) + (cx, cy - 0.25 * radius * np.sin(start))
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 255)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def dark_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The segmentation set's textured background, darkened to at most ~100 so that light shapes stand out."""
    return 0.45 * _background(rng, size)


def paint(image: np.ndarray, coverage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend a random light colour (each channel 150-255) into ``image`` where ``coverage`` is set."""
    alpha = coverage[..., None]
    return (1.0 - alpha) * image + alpha * rng.uniform(150, 255, size=3)
