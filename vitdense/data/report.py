"""A look at a segmentation dataset before training: per split, images, sizes, pixels and images per class, classes
missing from a split, every problem found, and a contact sheet of images with their masks overlaid.

Reads the DataModule's datasets (no model); masks are decoded in a few threads (Pillow releases the GIL).
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
from vitdense.data.recipe_rules import class_weight_rule, scale_range_rule
from vitdense.data.transforms import crop_exceeds_images

SPLITS = ("train", "val", "test")


@dataclass
class SplitSummary:
    """What one split holds: images, their sizes, pixels and images per class, and its readable samples."""

    name: str
    sizes: Counter = field(default_factory=Counter)
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None
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


def _mask_stats(dataset: Any, key: Any, num_classes: int, ignore_index: int) -> np.ndarray:
    mask = dataset.load_mask(key)
    return np.bincount(mask[mask != ignore_index].ravel(), minlength=num_classes)[:num_classes]


def summarize(datamodule: Any, splits: tuple[str, ...] = SPLITS, threads: int = 4) -> DataReport:
    """Read every split of a segmentation DataModule and collect statistics and *all* problems found.

    A split that cannot be listed at all (a missing folder, an unreadable annotation file) is reported with its error;
    within a split, every sample whose mask cannot be read, has values out of range or a size other than its image's
    is a problem of its own.
    """
    datamodule.problems = problems = []
    k, ignore = datamodule.num_classes, datamodule.ignore_index
    summaries = []
    for name in splits:
        summary = SplitSummary(name)
        summaries.append(summary)
        try:
            dataset = datamodule._labelled_dataset(name, None)
        except (ValueError, FileNotFoundError) as err:
            summary.error = str(err)
            if name != "test":  # a dataset without a test split is normal
                problems.append(f"{name}: {err}")
            continue
        summary.pixels, summary.images = np.zeros(k, np.int64), np.zeros(k, np.int64)
        summary.dataset = dataset

        def one(sample: tuple[Path, Any], dataset: Any = dataset) -> tuple[tuple[int, int], np.ndarray | str]:
            image_path, key = sample
            size = image_size(image_path)
            try:
                if dataset.annotation_size(key) != size:
                    w, h = dataset.annotation_size(key)
                    return size, f"'{image_path}' is {size[0]}x{size[1]} but {dataset.describe(key)} is {w}x{h}"
                return size, _mask_stats(dataset, key, k, ignore)
            except ValueError as err:
                return size, str(err)

        with ThreadPoolExecutor(threads) as pool:
            for sample, (size, stats) in zip(dataset.samples, pool.map(one, dataset.samples)):
                summary.sizes[size] += 1
                if isinstance(stats, str):
                    problems.append(stats)
                    continue
                summary.samples.append(sample)
                summary.pixels += stats
                summary.images += stats > 0
    datamodule.problems = None
    crop = getattr(datamodule, "crop_size", None)
    return DataReport(list(datamodule.class_names), summaries, list(dict.fromkeys(problems)), crop)


def contact_sheet(
    report: DataReport,
    datamodule: Any,
    colors: list[tuple[int, int, int]],
    path: Path,
    per_split: int = 8,
    tile: int = 160,
) -> Path:
    """A PNG grid, one row per split, of sample images with their masks blended in the class colours (void pixels
    left as they are); tiles keep the image's aspect and are resized with nearest neighbours, so colours stay exact."""
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
            image, mask = load_image(image_path), dataset.load_mask(key)
            labelled = mask != datamodule.ignore_index
            blend = image.copy()
            blend[labelled] = image[labelled] // 2 + lut[mask[labelled] % 256] // 2
            scale = tile / max(blend.shape[:2])
            size = (max(1, round(blend.shape[1] * scale)), max(1, round(blend.shape[0] * scale)))
            canvas = np.full((tile, tile, 3), 255, np.uint8)
            small = np.asarray(Image.fromarray(blend).resize(size, Image.NEAREST))
            canvas[: small.shape[0], : small.shape[1]] = small
            tiles.append(canvas)
        tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (per_split - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        raise ValueError("No split could be read, so there is nothing to show; see the problems listed.")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
