"""Segmentation on scenes larger than memory: random training windows and evaluation tiles read window by window from
GeoTIFF/.npy image rasters and their label rasters (never a whole scene).

- ``RasterWindowDataset`` (train): each item is a random window of one scene. Scenes get windows in proportion to their
  area (``windows_per_epoch`` in all); the window's side is ``crop / scale`` for a random ``scale`` of ``scale_range``
  (the image is then resized to ``crop``: the random-rescale augmentation without decoding more than the window), and
  it is flipped horizontally and vertically at random (overhead imagery has no up).
- ``RasterTileDataset`` (val/test): the tiles of a grid over each scene, each pixel in exactly one tile (the last
  tiles of a row or column are smaller), scored at full resolution.
- ``RasterSegmentationDataModule``: ``root/{train,val,test}/images/*.tif`` + ``root/{split}/labels/*.tif`` (same
  stems), class names from ``root/classes.txt``; a label raster must match its image's size, CRS and transform, and all
  scenes share one CRS and pixel size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vitdense.data.datamodules.base import BaseDataModule, SegmentationInputs, Split
from vitdense.data.formats.class_table import find_class_table
from vitdense.data.formats.folders import PredictImageFolder, check_split_folder, list_files, pair_by_key
from vitdense.data.formats.raster import RASTER_EXTENSIONS, Raster, Window, band_statistics, model_input
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import pad_collate, segmentation_eval_transform

LAYOUT = "root/{split}/images/*.tif + root/{split}/labels/*.tif (class-id rasters with the same stems)"


def pair_scenes(split_dir: Path) -> list[tuple[Path, Path]]:
    """The (image, label) rasters of a split folder (checked by ``check_split_folder``), paired by stem."""
    image_dir, label_dir = split_dir / "images", split_dir / "labels"
    images = {p.stem: p for p in list_files(image_dir, RASTER_EXTENSIONS)}
    labels = {p.stem: p for p in list_files(label_dir, RASTER_EXTENSIONS)}
    if not images:
        raise ValueError(f"No rasters found in '{image_dir}' (looked for {', '.join(RASTER_EXTENSIONS)}).")
    return pair_by_key(images, labels, image_dir, label_dir)


def check_scenes(pairs: list[tuple[Path, Path]], bands: list[int] | None) -> list[tuple[int, int]]:
    """Each scene's (height, width), after checking that labels match their images (size, CRS, transform), that all
    scenes share one CRS and pixel size, and that the bands exist. Lists every problem at once."""
    problems, sizes, reference = [], [], None
    for image_path, label_path in pairs:
        with Raster(image_path, bands) as image, Raster(label_path) as label:
            sizes.append(image.size)
            if label.count != 1:
                problems.append(f"label '{label_path}' has {label.count} bands; a label raster has one (class ids)")
            if label.size != image.size:
                problems.append(f"label '{label_path}' is {label.size[0]}x{label.size[1]} but image "
                                f"'{image_path}' is {image.size[0]}x{image.size[1]} (height x width)")  # fmt: skip
            if (
                label.crs is not None
                and image.crs is not None
                and (label.crs != image.crs or label.transform != image.transform)
            ):
                problems.append(f"label '{label_path}' is not on the grid of '{image_path}' (CRS or transform differ)")
            if image.transform is not None:
                grid = (image.crs, round(abs(image.transform.a), 9), round(abs(image.transform.e), 9))
                if reference is None:
                    reference = (grid, image_path)
                elif grid[0] != reference[0][0] or grid[1:] != reference[0][1:]:
                    problems.append(
                        f"'{image_path}' has CRS {grid[0]} and pixel size {grid[1]} x {grid[2]}, but "
                        f"'{reference[1]}' has {reference[0][0]} and {reference[0][1]} x {reference[0][2]}: "
                        "resample the scenes to one CRS and resolution first (e.g. gdalwarp -t_srs -tr)"
                    )
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the scenes: " + "; ".join(problems))
    return sizes


def _read_pair(image_path: Path, label_path: Path, window: Window, bands: list[int] | None, nodata: float | None,
               ignore_index: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(h, w, C) float32 image (NaN without data) and (h, w) int64 label of one window."""
    with Raster(image_path, bands, nodata) as raster:
        pixels = raster.read(window)
        valid = raster.valid(pixels)
    image = model_input(pixels).numpy().transpose(1, 2, 0).copy()
    image[~valid] = np.nan
    with Raster(label_path) as labels:
        label = labels.read(window)[:, :, 0].astype(np.int64)
        if labels.nodata is not None:
            label[label == labels.nodata] = ignore_index
    label[~valid] = ignore_index
    return image, label


def _to_item(image: np.ndarray, label: np.ndarray, path: Path, window: Window) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "mask": torch.from_numpy(np.ascontiguousarray(label)),
        "path": f"{path}#{window[0]},{window[1]},{window[2]},{window[3]}",
        "orig_size": tuple(label.shape),
        "valid_size": tuple(label.shape),
    }


class RasterWindowDataset(Dataset):
    """Random training windows of scenes (see the module docstring); the windows differ every epoch."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        sizes: list[tuple[int, int]],
        crop: int,
        windows_per_epoch: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        bands: list[int] | None = None,
        nodata: float | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.pairs, self.sizes, self.crop = pairs, sizes, crop
        self.scale_range, self.bands, self.nodata, self.ignore_index = scale_range, bands, nodata, ignore_index
        areas = np.array([h * w for h, w in sizes], dtype=np.float64)
        # Windows per scene in proportion to its area (largest remainders), so an epoch's windows are fixed in number.
        quota = areas / areas.sum() * windows_per_epoch
        counts = np.floor(quota).astype(int)
        counts[np.argsort(counts - quota)[: windows_per_epoch - counts.sum()]] += 1
        self.scene_of = np.repeat(np.arange(len(pairs)), counts)

    def __len__(self) -> int:
        return len(self.scene_of)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = int(self.scene_of[index])
        height, width = self.sizes[scene]
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        side = max(1, round(self.crop / scale))
        h, w = min(side, height), min(side, width)
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        window = (top, left, h, w)
        image, label = _read_pair(*self.pairs[scene], window, self.bands, self.nodata, self.ignore_index)
        size = (max(1, round(h * self.crop / side)), max(1, round(w * self.crop / side)))
        if size != (h, w):
            image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR).reshape(*size, -1)
            label = cv2.resize(label.astype(np.int32), size[::-1], interpolation=cv2.INTER_NEAREST).astype(np.int64)
        if torch.rand(()) < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if torch.rand(()) < 0.5:
            image, label = image[::-1], label[::-1]
        return _to_item(image, label, self.pairs[scene][0], window)


class RasterTileDataset(Dataset):
    """Evaluation tiles of ``tile`` pixels over each scene: every pixel in exactly one tile."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        sizes: list[tuple[int, int]],
        tile: int,
        bands: list[int] | None = None,
        nodata: float | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.pairs, self.bands, self.nodata, self.ignore_index = pairs, bands, nodata, ignore_index
        self.tiles = [
            (scene, (top, left, min(tile, height - top), min(tile, width - left)))
            for scene, (height, width) in enumerate(sizes)
            for top in range(0, height, tile)
            for left in range(0, width, tile)
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, window = self.tiles[index]
        image, label = _read_pair(*self.pairs[scene], window, self.bands, self.nodata, self.ignore_index)
        return _to_item(image, label, self.pairs[scene][0], window)


@register_datamodule
class RasterSegmentationDataModule(SegmentationInputs, BaseDataModule):
    """Semantic segmentation of large scenes: ``root/{train,val,test}/images/*.tif`` (any band count and dtype) with
    class-id label rasters ``root/{split}/labels/*.tif``, read by windows (see ``data.datamodules.raster_windows``)."""

    class_colors: list[tuple[int, int, int]] | None = None

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        ignore_index: int = 255,
        crop_size: int = 256,
        windows_per_epoch: int | None = None,
        eval_tile: int = 1024,
        scale_range: tuple[float, float] = (0.5, 2.0),
        bands: list[int] | None = None,
        nodata: float | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        """Read the class table; scenes are checked in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders of ``images/`` + ``labels/``.
            num_classes: Number of classes; defaults to the classes of ``root/classes.txt``.
            ignore_index: Label value of void pixels (also given to pixels without data).
            crop_size: Side of the square training windows after rescaling (the model's input size).
            windows_per_epoch: Training windows per epoch, shared among scenes by area; default: the training area
                over ``crop_size**2`` (each pixel seen about once per epoch).
            eval_tile: Side of the val/test tiles (memory per tile; results do not depend on it).
            scale_range: Range of the random rescale factor of training windows.
            bands: 0-based bands of the image rasters, in the model's order; default all.
            nodata: Value of image pixels without data (void in labels, zero after normalisation); default the file's.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of rasters for ``predict`` (whole; for scenes of any size use ``vitdense scene``).
            class_names: Class names, used when there is no ``root/classes.txt``.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.ignore_index, self.crop_size, self.eval_tile = ignore_index, crop_size, eval_tile
        self.windows_per_epoch, self.scale_range = windows_per_epoch, scale_range
        self.nodata, self.predict_dir = nodata, predict_dir
        table = find_class_table(self.root, ignore_index, None, lambda: None)
        self.class_colors = table.colors if table is not None else None
        names = table.names if table is not None else class_names
        if num_classes is None and names is None:
            raise ValueError(
                f"num_classes is not set and '{self.root / 'classes.txt'}' was not found: set "
                "data.init_args.num_classes, or add classes.txt with one class name per line."
            )
        self.num_classes = num_classes if num_classes is not None else len(names)  # type: ignore[arg-type]
        if names is not None and len(names) != self.num_classes:
            raise ValueError(f"The class table lists {len(names)} classes but num_classes={self.num_classes}.")
        self.class_names = list(names) if names is not None else [f"class_{i}" for i in range(self.num_classes)]
        self.bands = list(bands) if bands is not None else self._all_bands()

    def _all_bands(self) -> list[int]:
        first = next(iter(sorted((self.root / "train" / "images").glob("*"))), None)
        if first is None or first.suffix.lower() not in RASTER_EXTENSIONS:
            raise FileNotFoundError(f"No rasters in '{self.root / 'train' / 'images'}'. Expected the layout {LAYOUT}.")
        with Raster(first) as raster:
            return list(range(raster.count))

    def _scenes(self, split: str) -> tuple[list[tuple[Path, Path]], list[tuple[int, int]]]:
        split_dir = check_split_folder(self.root, split, ("images", "labels"), LAYOUT)
        pairs = pair_scenes(split_dir)
        return pairs, check_scenes(pairs, self.bands)

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError("predict needs a folder of rasters: set data.init_args.predict_dir.")
            return PredictImageFolder(self.predict_dir, segmentation_eval_transform(None), self.bands, self.nodata)
        pairs, sizes = self._scenes(split)
        if split == "train":
            count = self.windows_per_epoch or max(1, math.ceil(sum(h * w for h, w in sizes) / self.crop_size**2))
            if count < 1:
                raise ValueError(f"data.windows_per_epoch: {count} must be at least 1.")
            return RasterWindowDataset(pairs, sizes, self.crop_size, count, self.scale_range, self.bands,
                                       self.nodata, self.ignore_index)  # fmt: skip
        return RasterTileDataset(pairs, sizes, self.eval_tile, self.bands, self.nodata, self.ignore_index)

    def band_statistics(self) -> tuple[list[float], list[float]]:
        """Per-band mean and std over the training scenes' pixels with data (streamed window by window)."""
        pairs, _ = self._scenes("train")
        return band_statistics([image for image, _ in pairs], self.bands, self.nodata)

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Pad each batch to its largest tile (labels padded with ``ignore_index``)."""
        return partial(pad_collate, ignore_index=self.ignore_index)
