"""Multi-band rasters of any size: GeoTIFF/TIFF through rasterio and ``.npy`` through a numpy memory map, read whole or
by windows (a window decodes only the blocks it touches), with nodata, and per-band statistics streamed over files.

Bands are 0-based positions in the file (``bands: [3, 2, 1]`` reads the fourth, third and second band in that order).
Arrays come back as ``(H, W, C)`` in the file's dtype; ``model_input`` turns them into what a backbone takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

RASTER_EXTENSIONS = (".tif", ".tiff", ".npy")

Window = tuple[int, int, int, int]  # (top, left, height, width) in pixels


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - rasterio is a dependency; a slim install may lack it
        raise ImportError("Reading GeoTIFF needs rasterio: pip install 'vitdense[geo]' (or rasterio).") from err
    return rasterio


class Raster:
    """An open raster file: its size, bands, dtype, nodata and georeference, and windowed reads.

    Use as a context manager (``with Raster(path) as r: r.read((0, 0, 256, 256))``) or call ``close``.
    """

    def __init__(self, path: str | Path, bands: list[int] | None = None, nodata: float | None = None) -> None:
        """Open ``path`` (``.tif``/``.tiff`` with rasterio, ``.npy`` as an (H, W) or (H, W, C) memory map).

        Args:
            path: the raster file.
            bands: 0-based band positions to read, in order; default every band.
            nodata: the value that marks pixels without data; default the file's own (GeoTIFF), none for ``.npy``.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Raster '{self.path}' does not exist.")
        suffix = self.path.suffix.lower()
        if suffix not in RASTER_EXTENSIONS:
            raise ValueError(f"'{self.path}' is not a raster this reader knows ({', '.join(RASTER_EXTENSIONS)}).")
        self._dataset = None
        self._array: np.ndarray | None = None
        if suffix == ".npy":
            array = np.load(self.path, mmap_mode="r")
            if array.ndim not in (2, 3):
                raise ValueError(f"'{self.path}' holds a {array.ndim}-d array; expected (H, W) or (H, W, bands).")
            self._array = array if array.ndim == 3 else array[:, :, None]
            self.height, self.width, self.count = self._array.shape
            self.dtype = self._array.dtype
            self.crs, self.transform, file_nodata = None, None, None
        else:
            self._dataset = _rasterio().open(self.path)
            ds = self._dataset
            self.height, self.width, self.count = ds.height, ds.width, ds.count
            dtypes = set(ds.dtypes)
            if len(dtypes) != 1:
                raise ValueError(f"'{self.path}' mixes band dtypes {sorted(dtypes)}; write its bands in one dtype.")
            self.dtype = np.dtype(ds.dtypes[0])
            self.crs, self.transform, file_nodata = ds.crs, ds.transform, ds.nodata
        self.nodata = nodata if nodata is not None else file_nodata
        self.bands = list(range(self.count)) if bands is None else list(bands)
        bad = [b for b in self.bands if not 0 <= b < self.count]
        if bad or not self.bands:
            raise ValueError(
                f"bands: {self.bands} asks for band(s) {bad or 'none'} but '{self.path}' has {self.count} band(s) "
                f"(0-based positions 0..{self.count - 1})."
            )

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.height, self.width

    def read(self, window: Window | None = None) -> np.ndarray:
        """The pixels of ``window`` (default the whole raster) as (h, w, len(bands)) in the file's dtype."""
        top, left, h, w = window if window is not None else (0, 0, self.height, self.width)
        if top < 0 or left < 0 or h < 1 or w < 1 or top + h > self.height or left + w > self.width:
            raise ValueError(f"Window {window} is outside '{self.path}' ({self.height} x {self.width} pixels).")
        if self._array is not None:
            return np.ascontiguousarray(self._array[top : top + h, left : left + w][:, :, self.bands])
        from rasterio.windows import Window as RioWindow

        data = self._dataset.read([b + 1 for b in self.bands], window=RioWindow(left, top, w, h))  # type: ignore[union-attr]
        return np.ascontiguousarray(data.transpose(1, 2, 0))

    def valid(self, pixels: np.ndarray) -> np.ndarray:
        """(h, w) bool: pixels with data in every band (all True without a nodata value; NaN is never data)."""
        valid = np.ones(pixels.shape[:2], bool)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= ~(pixels == np.asarray(self.nodata, pixels.dtype)).any(-1)
        if pixels.dtype.kind == "f":
            valid &= ~np.isnan(pixels).any(-1)
        return valid

    def windows(self, size: int = 1024) -> Iterator[Window]:
        """Windows of at most ``size`` x ``size`` tiling the raster row by row (for streamed passes)."""
        for top in range(0, self.height, size):
            for left in range(0, self.width, size):
                yield top, left, min(size, self.height - top), min(size, self.width - left)


def model_input(pixels: np.ndarray) -> torch.Tensor:
    """(C, h, w) float32 of (h, w, C) pixels: 8-bit values scaled to [0, 1] (as the RGB image pipeline does), other
    dtypes as they are (the backbone's per-band ``mean``/``std`` then normalise them)."""
    array = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def load_raster(path: str | Path, bands: list[int] | None = None, nodata: float | None = None) -> np.ndarray:
    """A whole raster as (H, W, C) float32 in ``model_input``'s units, NaN where a band has no data."""
    with Raster(path, bands, nodata) as raster:
        pixels = raster.read()
        image = model_input(pixels).numpy().transpose(1, 2, 0).copy()
        image[~raster.valid(pixels)] = np.nan
    return image


class BandMoments:
    """Per-band count, mean and sum of squared deviations, merged batch by batch with Chan et al.'s pairwise update
    (float64): memory is one batch, and large values lose no precision to cancellation."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, values: np.ndarray) -> None:
        """Take (n, bands) values (pixels with data only)."""
        values = values.astype(np.float64)
        if not len(values):
            return
        n, batch_mean = len(values), values.mean(0)
        batch_m2 = ((values - batch_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        delta, total = batch_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std) per band; std at least 1e-6 (a constant band normalises to 0, not to infinity)."""
        if self.mean is None:
            raise ValueError("No pixel with data in the given images: cannot compute band statistics.")
        return self.mean.tolist(), np.maximum(np.sqrt(self.m2 / self.count), 1e-6).tolist()


def band_statistics(
    paths: Iterable[str | Path], bands: list[int] | None = None, nodata: float | None = None, window: int = 1024
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over every pixel with data of ``paths``, in ``model_input``'s units,
    streamed window by window (``BandMoments``)."""
    moments = BandMoments()
    for path in paths:
        with Raster(path, bands, nodata) as raster:
            for win in raster.windows(window):
                pixels = raster.read(win)
                moments.add(model_input(pixels).numpy().transpose(1, 2, 0)[raster.valid(pixels)])
    return moments.result()
