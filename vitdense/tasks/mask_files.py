"""Files of predicted masks: the default class colours (PASCAL VOC's colour map) and PNGs written without ever
replacing an existing file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def class_palette(n: int) -> list[int]:
    """PASCAL VOC's colour map (class 0 black, then well-separated colours), as a flat RGB list of ``n`` entries."""
    palette = []
    for k in range(n):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def display_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image to draw on: the image itself, or for a raster (multi-band GeoTIFF/.npy) its
    first three bands (one band: grey), each stretched from its 2nd to its 98th percentile, nodata black."""
    from vitdense.data.formats.io import load_image

    try:
        return load_image(path)
    except ValueError:
        if Path(path).suffix.lower() not in (".tif", ".tiff", ".npy"):
            raise
    from vitdense.data.formats.raster import load_raster

    bands = load_raster(path)
    bands = bands[:, :, :3] if bands.shape[2] >= 3 else np.repeat(bands[:, :, :1], 3, axis=2)
    out = np.zeros(bands.shape, np.uint8)
    for c in range(3):
        values = bands[:, :, c]
        valid = ~np.isnan(values)
        if valid.any():
            lo, hi = np.percentile(values[valid], (2, 98))
            scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1) * 255
            out[:, :, c] = np.where(valid, scaled, 0).astype(np.uint8)
    return out


def save_new_png(image: Image.Image, path: Path, source: str) -> Path:
    """Save ``image`` as the PNG ``path``, which must not exist yet (exclusive create, also across processes)."""
    try:
        with path.open("xb") as f:
            image.save(f, format="PNG")
    except FileExistsError:
        raise FileExistsError(
            f"The prediction of '{source}' would overwrite '{path}', written for another image of the same name. "
            "Give the images distinct names (or predict them into separate folders)."
        ) from None
    return path
