"""Synthetic data made in code: the seeded generator of each item and the one shape renderer (``shape_coverage``).

Segmentation draws flat-coloured circles, rectangles and triangles with hard edges that may overlap
(``render_shapes``, ``SEGMENTATION_STYLE``). Classification and detection draw anti-aliased circles, elongated
rectangles and triangles (``SMOOTH_STYLE``), made to be learnt by a small ViT from scratch in minutes: light shapes on
a darkened textured background (with both colours random, telling shape from background is itself a relation slow
to learn from a few hundred images), and rectangles clearly longer than wide (a square differs from a circle only at
its corners). Colour carries no class information. The datasets and DataModules are in
``vitdense.data.datamodules.synthetic``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 1}


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of item ``index`` of a synthetic split: the same arguments give the same item.

    Splits draw different items: ``train``, ``val`` and ``test`` have fixed ids (``predict`` shares ``val``'s), any
    other split name is identified by its CRC-32.
    """
    return np.random.default_rng([seed, SPLIT_IDS.get(split, zlib.crc32(split.encode())), index])


SHAPE_CLASSES = ["background", "circle", "rectangle", "triangle"]
_MAX_OVERLAP = 0.1


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: base colour + linear gradient + sinusoidal stripes + noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle, stripe_angle = rng.uniform(0, 2 * np.pi, size=2)
    gradient = np.cos(angle) * xx + np.sin(angle) * yy
    stripes = np.sin(2 * np.pi * rng.uniform(2, 6) * (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy))
    image = (
        rng.uniform(40, 215, size=3)
        + rng.uniform(-40, 40, size=3) * gradient[..., None]
        + rng.uniform(0, 20, size=3) * stripes[..., None]
        + rng.normal(0, 6, size=(size, size, 3))
    )
    return np.clip(image, 0, 255)


def _distinct_color(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Of a few random colours, the one farthest from (the 5th percentile of) the pixels it will cover."""
    pixels = region[:: max(1, len(region) // 256)]
    candidates = rng.uniform(0, 255, size=(16, 3))
    distances = np.linalg.norm(pixels[None] - candidates[:, None], axis=-1)
    return candidates[np.argmax(np.percentile(distances, 5, axis=1))]


def render_shapes(rng: np.random.Generator, size: int, max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1 to ``max_shapes`` flat-coloured shapes on a textured background.

    Later shapes paint over earlier ones in both image and mask, but a new shape may cover at most
    ``_MAX_OVERLAP`` of its area with earlier ones (heavy occlusion makes the quickstart slow to learn).
    Colours are random (not tied to the class), each chosen to stand out from what it covers, so the class must
    be told from the shape.

    Args:
        rng: Random generator; the same state gives the same sample.
        size: Image side in pixels.
        max_shapes: Most shapes per image.

    Returns:
        ``(size, size, 3)`` uint8 RGB image and ``(size, size)`` uint8 mask of ``SHAPE_CLASSES`` indices.
    """
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        for _attempt in range(10):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            radius = rng.uniform(0.15, 0.4) * size  # radius / half-side 15-40% of the image
            centre = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
            shape = shape_coverage(rng, cls - 1, (centre[0], centre[1]), radius, size, SEGMENTATION_STYLE) > 0.5
            if shape.any() and np.count_nonzero(shape & (mask > 0)) <= _MAX_OVERLAP * np.count_nonzero(shape):
                break
        else:
            continue
        image[shape] = _distinct_color(rng, image[shape])
        mask[shape] = cls
    return np.round(image).astype(np.uint8), mask


@dataclass(frozen=True)
class ShapeStyle:
    """How ``shape_coverage`` draws a shape of a given extent (one renderer, two looks).

    Attributes:
        rect_half: half the rectangle's long side, as a multiple of the extent.
        rect_aspect: range of the rectangle's short / long side.
        tri_radius: the triangle's circumradius, as a multiple of the extent.
        tri_jitter: random turn of each triangle corner, in radians (triangles point up or down).
        tri_centred: shift the triangle so that its box, not its circumcentre, sits on the centre.
        supersample: drawing resolution factor; > 1 gives anti-aliased edges.
    """

    rect_half: float
    rect_aspect: tuple[float, float]
    tri_radius: float
    tri_jitter: float
    tri_centred: bool
    supersample: int


# Segmentation: hard edges (a mask's class is exact at every pixel); rectangles near-square, triangles large, with
# sizes chosen so that the three classes cover similar areas on average.
SEGMENTATION_STYLE = ShapeStyle(rect_half=0.9, rect_aspect=(0.6, 1.0), tri_radius=1.5, tri_jitter=0.2,
                                tri_centred=False, supersample=1)  # fmt: skip
# Classification and detection: anti-aliased, elongated rectangles, triangles centred in their box.
SMOOTH_STYLE = ShapeStyle(rect_half=1.0, rect_aspect=(0.35, 0.65), tri_radius=1.1, tri_jitter=0.15,
                          tri_centred=True, supersample=4)  # fmt: skip
SHAPE_NAMES = ["circle", "rectangle", "triangle"]


def shape_coverage(
    rng: np.random.Generator,
    label: int,
    centre: tuple[float, float],
    extent: float,
    size: int,
    style: ShapeStyle = SMOOTH_STYLE,
) -> np.ndarray:
    """Draw one shape, the renderer of every synthetic set.

    Args:
        rng: Random generator for the shape's aspect ratio and orientation.
        label: Index into ``SHAPE_NAMES``: circle (radius ``extent``), rectangle (half long side
            ``style.rect_half * extent``, horizontal or vertical) or triangle (circumradius
            ``style.tri_radius * extent``, pointing up or down).
        centre: ``(x, y)`` centre in pixels.
        extent: The shape's half size in pixels.
        size: Image side in pixels.
        style: Proportions and edges (``SEGMENTATION_STYLE`` or ``SMOOTH_STYLE``).

    Returns:
        ``(size, size)`` float32 coverage in [0, 1] (0 or 1 when ``style.supersample`` is 1). With ``SMOOTH_STYLE``
        the shape lies within ``extent`` of ``centre`` (triangles within ``1.05 * extent``).
    """
    s = style.supersample
    canvas: np.ndarray = np.zeros((size * s, size * s), np.uint8)
    cx, cy, r = centre[0] * s, centre[1] * s, extent * s
    if label == 0:
        cv2.circle(canvas, (round(cx), round(cy)), round(r), 255, thickness=-1)
    elif label == 1:
        half = (style.rect_half * r, style.rect_half * r * rng.uniform(*style.rect_aspect))
        hw, hh = half if rng.random() < 0.5 else half[::-1]
        cv2.rectangle(canvas, (round(cx - hw), round(cy - hh)), (round(cx + hw), round(cy + hh)), 255, thickness=-1)
    else:
        # pointing up or down (with some jitter): free rotation makes triangles much slower to learn
        start = -np.pi / 2 + rng.choice([0.0, np.pi])
        angles = start + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-style.tri_jitter, style.tri_jitter, size=3)
        radius = style.tri_radius * r
        # the base lies radius / 2 from the circumcentre: shift by radius / 4 to centre the triangle vertically
        shift = 0.25 * radius * np.sin(start) if style.tri_centred else 0.0
        points = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1) + (cx, cy - shift)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 255)
    if s > 1:
        canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return canvas.astype(np.float32) / 255.0


def dark_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The segmentation set's textured background, darkened to at most ~100 so that light shapes stand out."""
    return 0.45 * _background(rng, size)


def paint(image: np.ndarray, coverage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend a random light colour (each channel 150-255) into ``image`` where ``coverage`` is set."""
    alpha = coverage[..., None]
    return (1.0 - alpha) * image + alpha * rng.uniform(150, 255, size=3)


def render_detection_sample(
    rng: np.random.Generator, size: int, max_shapes: int = 3, empty_prob: float = 0.1, masks: bool = False
) -> tuple[np.ndarray, ...]:
    """Draw 0 to ``max_shapes`` separate light shapes on a dark textured background and return their boxes.

    Shapes (see ``shape_coverage``) are 30-50% of the image wide, lie wholly inside it and do not overlap
    (a shape that finds no free place in 20 tries is left out). A box spans the pixels its shape covers by half or
    more.

    Args:
        rng: Random generator; the same state gives the same sample.
        size: Image side in pixels.
        max_shapes: Most shapes per image.
        empty_prob: Probability of an image without shapes.
        masks: also return each shape's mask (the pixels it covers by half or more, as its box): the same draws,
            so the same images and boxes.

    Returns:
        ``(size, size, 3)`` uint8 image, ``(N, 4)`` float64 xyxy boxes and ``(N,)`` int64 labels (indices into
        ``SHAPE_NAMES``), and with ``masks`` an ``(N, size, size)`` uint8 array of 0/1.
    """
    image = dark_background(rng, size)
    boxes: list[list[float]] = []
    labels: list[int] = []
    shapes: list[np.ndarray] = []
    count = 0 if rng.random() < empty_prob else int(rng.integers(1, max_shapes + 1))
    for _ in range(count):
        for _attempt in range(20):
            extent = rng.uniform(0.15, 0.25) * size
            reach = 1.05 * extent + 1.0  # every shape lies within 1.05 * extent of its centre
            cx, cy = rng.uniform(reach, size - reach, size=2)
            if all(
                cx + reach < x0 or cx - reach > x1 or cy + reach < y0 or cy - reach > y1 for x0, y0, x1, y1 in boxes
            ):
                break
        else:
            continue
        label = int(rng.integers(len(SHAPE_NAMES)))
        coverage = shape_coverage(rng, label, (cx, cy), extent, size)
        ys, xs = np.nonzero(coverage >= 0.5)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        labels.append(label)
        shapes.append((coverage >= 0.5).astype(np.uint8))
        image = paint(image, coverage, rng)
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = (np.round(image).astype(np.uint8), box_array, np.asarray(labels, dtype=np.int64))
    if masks:
        return (*out, np.stack(shapes) if shapes else np.zeros((0, size, size), np.uint8))
    return out
