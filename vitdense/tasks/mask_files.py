"""Files of predicted masks: the default class colours (PASCAL VOC's colour map) and PNGs written without ever
replacing an existing file."""

from __future__ import annotations

from pathlib import Path

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
