"""A look at a segmentation dataset before training: per split, images, sizes, pixels and images per class, classes
missing from a split, every problem found, and a contact sheet of images with their masks overlaid
(``vitdense data``; its ``--write`` is ``vitdense.data.write``).

Reads the DataModule's datasets (no model): folders of any layout and label format (multi-band too), and the scenes of
``RasterSegmentationDataModule`` window by window; masks are decoded in a few threads (Pillow releases the GIL).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitdense.data.formats.io import image_size, load_image
from vitdense.data.formats.raster import Raster
from vitdense.data.recipe_rules import class_weight_rule, scale_range_rule, single_object_rule
from vitdense.data.regions import class_objects, class_pixels
from vitdense.data.transforms import crop_exceeds_images

SPLITS = ("train", "val", "test")


@dataclass
class SplitSummary:
    """What one split holds: images, their sizes, pixels and images per class, and its readable samples."""

    name: str
    sizes: Counter = field(default_factory=Counter)
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None
    solid: np.ndarray | None = None  # per class, the masks where it is one solid object (mask folders, not scenes)
    samples: list[tuple[Path, Any]] = field(default_factory=list)
    error: str | None = None
    dataset: Any = None


@dataclass
class DataReport:
    """The summary of every split, the problems found, and the class names."""

    class_names: list[str]
    splits: list[SplitSummary]
    problems: list[str]
    crop_size: int | None = None

    def automatic_choices(self) -> list[str]:
        """What the template's ``auto`` settings choose from this training split (``vitdense.data.recipe_rules``)."""
        train = next((s for s in self.splits if s.name == "train" and s.error is None), None)
        if train is None or train.pixels is None:
            return []
        weights = class_weight_rule(train.pixels, self.class_names)
        lines = [f"  loss.class_weights: auto -> {weights.value} ({weights.reason})"]
        if self.crop_size:
            sides = [min(size) for size, count in train.sizes.items() for _ in range(count)]
            scale = scale_range_rule(sides, self.crop_size)
            lines.append(f"  data.scale_range: auto -> {list(scale.value)} ({scale.reason})")
        if train.solid is not None and train.images is not None:
            objects = single_object_rule(train.images, train.solid, self.class_names)
            kept = [self.class_names[k] for k in objects.value]
            lines.append(f"  inference.keep_largest: auto -> {kept} ({objects.reason})")
        return lines

    def table(self) -> str:
        """The report as text: a table per split, missing classes, then every problem."""
        lines = []
        for s in self.splits:
            if s.error is not None:
                lines += [f"{s.name}: not read ({s.error.splitlines()[0][:200]})", ""]
                continue
            n = sum(s.sizes.values())
            sizes = ", ".join(f"{w}x{h} ({c})" for (w, h), c in s.sizes.most_common(5))
            more = f", {len(s.sizes) - 5} other sizes" if len(s.sizes) > 5 else ""
            lines.append(f"{s.name}: {n} images; sizes (w x h): {sizes}{more}")
            total = max(int(s.pixels.sum()), 1)  # type: ignore[union-attr]
            width = max(len("class"), *(len(c) for c in self.class_names))
            lines.append(f"  {'class':<{width}}  {'pixels':>12}  {'share':>7}  {'images':>6}")
            for k, name in enumerate(self.class_names):
                pixels, images = int(s.pixels[k]), int(s.images[k])  # type: ignore[index]
                lines.append(f"  {name:<{width}}  {pixels:>12}  {pixels / total:>7.4f}  {images:>6}")
            missing = [c for k, c in enumerate(self.class_names) if s.images[k] == 0]  # type: ignore[index]
            lines.append(f"  missing from {s.name}: {', '.join(missing) if missing else 'none'}")
            lines.append("")
        choices = self.automatic_choices()
        if choices:
            lines += ["what `auto` settings choose from the train split:", *choices, ""]
        train = next((s for s in self.splits if s.name == "train" and s.error is None), None)
        too_large = crop_exceeds_images(self.crop_size, list(train.sizes)) if self.crop_size and train else None
        if too_large:  # what fit warns about, said before it
            lines += [f"warning: {too_large}", ""]
        lines.append(f"problems: {len(self.problems)}" + (":" if self.problems else ""))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def reportable(datamodule: Any) -> bool:
    """Whether ``summarize`` reads this DataModule: segmentation folders (any layout) or raster scenes."""
    return hasattr(datamodule, "_labelled_dataset") or hasattr(datamodule, "_scenes")


class SceneSplit:
    """The scenes of one split of ``RasterSegmentationDataModule`` as ``summarize`` reads a folder dataset: labels are
    counted window by window (a scene is never read whole), pixels without image data are void as in training."""

    def __init__(self, datamodule: Any, split: str, window: int = 1024) -> None:
        self.samples, _ = datamodule._scenes(split)
        self.bands, self.nodata, self.ignore_index = datamodule.bands, datamodule.nodata, datamodule.ignore_index
        self.window = window

    def annotation_size(self, key: Path) -> tuple[int, int]:
        with Raster(key) as label:
            return label.width, label.height

    def describe(self, key: Path) -> str:
        return f"'{key}'"

    def read(self, image_path: Path, key: Path, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The image pixels (h, w, bands) and the class ids of ``window``, void where the image has no data."""
        with Raster(image_path, self.bands, self.nodata) as image, Raster(key) as label:
            pixels, ids = image.read(window), label.read(window)[:, :, 0].astype(np.int64)
            if label.nodata is not None:
                ids[ids == label.nodata] = self.ignore_index
            ids[~image.valid(pixels)] = self.ignore_index
        return pixels, ids

    def class_counts(self, image_path: Path, key: Path, num_classes: int) -> np.ndarray:
        counts = np.zeros(num_classes, np.int64)
        with Raster(key) as label:
            windows = list(label.windows(self.window))
        for window in windows:
            _, ids = self.read(image_path, key, window)
            counts += class_pixels(ids, num_classes, self.ignore_index)
        return counts

    def preview(self, image_path: Path, key: Path) -> tuple[np.ndarray, np.ndarray]:
        """The centre window (at most ``window`` pixels a side) of a scene, for the contact sheet."""
        with Raster(key) as label:
            h, w = min(self.window, label.height), min(self.window, label.width)
            window = ((label.height - h) // 2, (label.width - w) // 2, h, w)
        pixels, ids = self.read(image_path, key, window)
        return pixels, ids


def _split_dataset(datamodule: Any, name: str) -> Any:
    if hasattr(datamodule, "_labelled_dataset"):
        return datamodule._labelled_dataset(name, None)
    return SceneSplit(datamodule, name)


def summarize(datamodule: Any, splits: tuple[str, ...] = SPLITS, threads: int = 4) -> DataReport:
    """Read every split of a segmentation DataModule and collect statistics and *all* problems found.

    A split that cannot be listed at all (a missing folder, an unreadable annotation file) is reported with its error;
    within a split, every sample whose image or mask cannot be read, has values out of range or a size other than its
    image's is a problem of its own.
    """
    datamodule.problems = problems = []
    k, ignore = datamodule.num_classes, datamodule.ignore_index
    summaries = []
    for name in splits:
        summary = SplitSummary(name)
        summaries.append(summary)
        try:
            dataset = _split_dataset(datamodule, name)
        except (ValueError, OSError) as err:
            summary.error = str(err)
            if name != "test":  # a dataset without a test split is normal
                problems.append(f"{name}: {err}")
            continue
        summary.pixels, summary.images = np.zeros(k, np.int64), np.zeros(k, np.int64)
        # what keep_largest: auto reads, from the training masks only (scenes are counted by windows: not measured)
        regions = name == "train" and not hasattr(dataset, "class_counts")
        summary.solid = np.zeros(k, np.int64) if regions else None
        summary.dataset = dataset

        def one(
            sample: tuple[Path, Any], dataset: Any = dataset, regions: bool = regions
        ) -> tuple[tuple[int, int] | None, np.ndarray | str]:
            image_path, key = sample
            try:
                size = image_size(image_path)
            except (ValueError, OSError) as err:  # an unreadable image is a problem of its own
                return None, str(err)
            try:
                if dataset.annotation_size(key) != size:
                    w, h = dataset.annotation_size(key)
                    return size, f"'{image_path}' is {size[0]}x{size[1]} but {dataset.describe(key)} is {w}x{h}"
                if hasattr(dataset, "class_counts"):
                    return size, dataset.class_counts(image_path, key, k)
                mask = dataset.load_mask(key)
                return size, np.stack(class_objects(mask, k, ignore)) if regions else class_pixels(mask, k, ignore)
            except (ValueError, OSError) as err:
                return size, str(err)

        with ThreadPoolExecutor(threads) as pool:
            for sample, (size, stats) in zip(dataset.samples, pool.map(one, dataset.samples)):
                if size is not None:
                    summary.sizes[size] += 1
                if isinstance(stats, str):
                    problems.append(stats)
                    continue
                summary.samples.append(sample)
                if summary.solid is not None:
                    stats, solid = stats
                    summary.solid += solid
                summary.pixels += stats
                summary.images += stats > 0
    datamodule.problems = None
    crop = getattr(datamodule, "crop_size", None)
    return DataReport(list(datamodule.class_names), summaries, list(dict.fromkeys(problems)), crop)


def require_readable(report: DataReport, where: Path | None = None) -> None:
    """Raise when no split could be read: after the report (and its problems) was printed, the run ends as an error."""
    if any(s.samples for s in report.splits):
        return
    listed = f", listed above and in '{where}'" if where is not None else ", listed above"
    raise ValueError(
        f"No split of the data could be read ({len(report.problems)} problem(s){listed}); fix them, or point "
        "data.root at the folder the export was unzipped into."
    )


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 for viewing: an 8-bit RGB image as it is; a raster's first three bands (one band as grey),
    each stretched between its 2nd and 98th percentile of the pixels with data, no data black."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    bands = image.reshape(*image.shape[:2], -1)[:, :, :3].astype(np.float64)
    if bands.shape[2] < 3:
        bands = np.repeat(bands[:, :, :1], 3, axis=2)
    out = np.zeros(bands.shape, np.uint8)
    for b in range(3):
        band = bands[:, :, b]
        finite = band[np.isfinite(band)]
        if finite.size:
            lo, hi = np.percentile(finite, [2, 98])
            scaled = np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 255
            out[:, :, b] = np.nan_to_num(scaled).round().astype(np.uint8)
    return out


def _sheet_pair(dataset: Any, image_path: Path, key: Any) -> tuple[np.ndarray, np.ndarray]:
    """The image (as ``display_rgb`` shows it) and the class-id mask of a sample, read as the dataset reads them."""
    if hasattr(dataset, "preview"):
        image, mask = dataset.preview(image_path, key)
    else:
        loader = getattr(dataset, "load_image", load_image)  # multi-band folders read their bands
        image, mask = loader(image_path), dataset.load_mask(key)
    return display_rgb(image), mask


def contact_sheet(
    report: DataReport,
    datamodule: Any,
    colors: list[tuple[int, int, int]],
    path: Path,
    per_split: int = 8,
    tile: int = 160,
) -> Path | None:
    """A PNG grid, one row per split, of sample images with their masks blended in the class colours (void pixels
    left as they are); tiles keep the image's aspect and are resized with nearest neighbours, so colours stay exact.
    Multi-band images show their first three bands, stretched; a scene its centre window. ``None`` (nothing written)
    when no split has a readable sample."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)[:256]
    rows = []
    for s in report.splits:
        if not s.samples:
            continue
        picks = [s.samples[i] for i in np.linspace(0, len(s.samples) - 1, min(per_split, len(s.samples))).astype(int)]
        dataset = s.dataset
        tiles = []
        for image_path, key in picks:
            image, mask = _sheet_pair(dataset, image_path, key)
            labelled = mask != datamodule.ignore_index
            blend = image.copy()
            blend[labelled] = image[labelled] // 2 + lut[mask[labelled] % 256] // 2
            scale = tile / max(blend.shape[:2])
            size = (max(1, round(blend.shape[1] * scale)), max(1, round(blend.shape[0] * scale)))
            canvas = np.full((tile, tile, 3), 255, np.uint8)
            small = np.asarray(Image.fromarray(blend).resize(size, Image.Resampling.NEAREST))
            canvas[: small.shape[0], : small.shape[1]] = small
            tiles.append(canvas)
        tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (per_split - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
