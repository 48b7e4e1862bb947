"""Reading images and masks from disk as numpy arrays, with errors that name the file.

Pixels are kept as stored (no EXIF rotation) so that images and their masks stay aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Pillow raises OSError (UnidentifiedImageError, truncated data), ValueError or SyntaxError on bad files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_MASK_MODES = ("1", "L", "P", *_HIGH_DEPTH_MODES[:-1])


def _read_error(path: str | Path, err: BaseException) -> ValueError:
    return ValueError(f"Cannot read image '{path}': {err}. Check the file is a valid image or remove it.")


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode an image, turning any decode failure into one clear ValueError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except _DECODE_ERRORS as err:
        raise _read_error(path, err) from err


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a 16/32-bit integer or float single-channel array to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:  # not a [0, 1] image: stretch its own range
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return np.round(arr * 255.0).astype(np.uint8)
    arr = arr.astype(np.int64)
    if arr.min(initial=0) >= 0 and arr.max(initial=0) <= np.iinfo(np.uint16).max:
        return (arr >> 8).astype(np.uint8)  # 16-bit data, also when Pillow opens it as 32-bit mode "I"
    return ((arr - np.iinfo(np.int32).min) >> 24).astype(np.uint8)


def _raster_hint(path: str | Path) -> ValueError | None:
    """The error for a multi-band raster read as an RGB image (None when the file is not one)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        return None
    try:
        from vitdense.data.formats.raster import Raster

        with Raster(path) as raster:
            what = f"{raster.count} band(s) of {raster.dtype}"
    except Exception:  # not a raster either: the caller's own error stands
        return None
    return ValueError(
        f"'{path}' is a raster of {what}, not an 8-bit RGB image: set data.bands to the bands to train on (0-based, "
        "e.g. bands: [0, 1, 2, 3]) to read it with its bands and values."
    )


def load_image(path: str | Path) -> np.ndarray:
    """Load an image as an ``(H, W, 3)`` uint8 RGB array, whatever its mode.

    Grayscale and palette images are expanded to RGB, alpha is dropped, CMYK is converted, 16-bit and 32-bit
    integer images are scaled by their dtype's range (``>> 8`` for 16-bit), float images in [0, 1] are scaled by
    255 (other float ranges are stretched to [0, 255]).

    Args:
        path: Image file.

    Raises:
        ValueError: The file cannot be decoded.
    """
    if Path(path).suffix.lower() == ".npy":
        raise _raster_hint(path) or ValueError(f"Cannot read '{path}' as an image: set data.bands for .npy rasters.")
    try:
        img = _open(path)
    except ValueError as err:
        raise (_raster_hint(path) or err) from err
    if img.mode in _HIGH_DEPTH_MODES:
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def load_mask(path: str | Path) -> np.ndarray:
    """Load a single-channel class-id mask as an ``(H, W)`` int64 array.

    Palette (``P``) masks give their palette indices, not their colours.

    Args:
        path: Mask file (modes ``L``, ``P``, ``1``, ``I;16`` or ``I``).

    Raises:
        ValueError: The file cannot be decoded or has more than one channel.
    """
    img = _open(path)
    if img.mode not in _MASK_MODES:
        raise ValueError(
            f"Mask '{path}' has image mode {img.mode!r}: masks must be single-channel class-id PNGs "
            "(mode L, P or 16-bit) where each pixel value is a class index, not a colour. For colour masks, give "
            "each class its colour: root/classes.txt lines `<id> <name> <r,g,b>`, CVAT's labelmap.txt, or data.classes."
        )
    return np.asarray(img).astype(np.int64)


def image_size(path: str | Path) -> tuple[int, int]:
    """Return ``(width, height)`` of an image, reading only its header.

    Args:
        path: Image file.

    Raises:
        ValueError: The file is not a readable image.
    """
    if Path(path).suffix.lower() == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        return int(shape[1]), int(shape[0])
    try:
        with Image.open(path) as img:
            return img.size
    except _DECODE_ERRORS as err:
        if Path(path).suffix.lower() in (".tif", ".tiff"):  # multi-band or high-depth TIFF that Pillow cannot open
            try:
                from vitdense.data.formats.raster import Raster

                with Raster(path) as raster:
                    return raster.width, raster.height
            except Exception:
                pass
        raise _read_error(path, err) from err


def load_mask_any(path: str | Path) -> tuple[np.ndarray, bool]:
    """Load a mask as stored: ``(H, W)`` int64 class ids for single-channel files, ``(H, W, 3)`` uint8 colours for
    RGB(A) files; the flag says which (True = colours). Palette (``P``) masks give their palette indices.

    Raises:
        ValueError: The file cannot be decoded or has a mode that is neither.
    """
    img = _open(path)
    if img.mode in _MASK_MODES:
        return np.asarray(img).astype(np.int64), False
    if img.mode in ("RGB", "RGBA", "RGBX"):
        return np.asarray(img.convert("RGB")), True
    raise ValueError(f"Mask '{path}' has image mode {img.mode!r}: masks are class-id PNGs (L, P, 16-bit) or RGB "
                     "colour masks.")  # fmt: skip


def load_palette_colors(path: str | Path) -> np.ndarray:
    """Load any mask as ``(H, W, 3)`` uint8 colours (palette masks through their palette)."""
    return np.asarray(_open(path).convert("RGB"))
