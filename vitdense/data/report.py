"""A look at a segmentation dataset before training: per split, images, sizes, pixels and images per class, classes
missing from a split, every problem found, and a contact sheet of images with their masks overlaid; and the data as
vitdense will train on it, written in the plainest standard form (``write_masks``: class-id palette PNGs and
``classes.txt``; ``write_coco``: COCO JSON per split for detection and instance DataModules).

Reads the DataModule's datasets (no model): folders of any layout and label format (multi-band too), and the scenes of
``RasterSegmentationDataModule`` window by window; masks are decoded in a few threads (Pillow releases the GIL).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitdense.data.formats.io import image_size, load_image
from vitdense.data.formats.raster import Raster
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
            counts += _counts(ids, num_classes, self.ignore_index)
        return counts

    def preview(self, image_path: Path, key: Path) -> tuple[np.ndarray, np.ndarray]:
        """The centre window (at most ``window`` pixels a side) of a scene, for the contact sheet."""
        with Raster(key) as label:
            h, w = min(self.window, label.height), min(self.window, label.width)
            window = ((label.height - h) // 2, (label.width - w) // 2, h, w)
        pixels, ids = self.read(image_path, key, window)
        return pixels, ids


def _counts(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    labelled = mask[mask != ignore_index].ravel()
    return np.bincount(labelled, minlength=num_classes)[:num_classes]


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
        summary.dataset = dataset

        def one(sample: tuple[Path, Any], dataset: Any = dataset) -> tuple[tuple[int, int] | None, np.ndarray | str]:
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
                return size, _counts(dataset.load_mask(key), k, ignore)
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


def check_new_folder(out: Path) -> None:
    """``--write`` goes into a new or empty folder: what is there is never overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"--write '{out}' is not an empty folder; give a new or empty one (nothing was written: vitdense never "
            "overwrites what is there)."
        )


@contextmanager
def _new_folder(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out`` that becomes ``out`` when the block ends; on an error nothing is left."""
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o755)
    if out.exists():
        out.rmdir()
    os.replace(staging, out)


def _unique_stems(split: str, paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(
                f"--write names masks by image stem, but the {split} split has two images with the stem "
                f"'{path.stem}': '{seen[path.stem]}' and '{path}'. Rename one (nothing was written)."
            )
        seen[path.stem] = path


def write_masks(
    report: DataReport, datamodule: Any, out: Path, colors: list[tuple[int, int, int]], splits: tuple[str, ...] = SPLITS
) -> str:
    """Write what vitdense trains on: per split, ``out/<split>/masks/<image stem>.png``, the class ids of each sample
    after every label format and class-table convention (before augmentation; void 255; a raster's pixels without data
    void, as in training) as 8-bit palette PNGs in the class colours, and ``out/classes.txt`` (one class name per line,
    in id order). ``report`` (``summarize``'s) must list no problem. Returns what was written, in a line.
    """
    if not hasattr(datamodule, "_labelled_dataset"):
        raise ValueError(
            f"--write writes folder datasets; {type(datamodule).__name__}'s label rasters already are class ids "
            "(use them as they are)."
        )
    # A split that could not be listed at all (an export without val) is left out and said; a problem inside a split
    # that was read (a bad mask, an unreadable image) would write something other than what a fit trains on.
    unlisted = {f"{s.name}: {s.error}" for s in report.splits if s.error is not None}
    blocking = [problem for problem in report.problems if problem not in unlisted]
    if blocking:
        raise ValueError(
            f"--write: nothing was written: the data has {len(blocking)} problem(s), listed above, at which a "
            "fit would stop. Fix them first."
        )
    k, ignore = datamodule.num_classes, datamodule.ignore_index
    if k > 255:
        raise ValueError(f"--write writes 8-bit palette PNGs (void 255): at most 255 classes, but num_classes={k}.")
    datasets = {s.name: s.dataset for s in report.splits if s.name in splits and s.dataset is not None}
    for split, dataset in datasets.items():
        _unique_stems(split, [Path(image) for image, _ in dataset.samples])
    palette = np.zeros((256, 3), np.uint8)
    palette[: min(k, len(colors))] = np.asarray(colors[:k], np.uint8).reshape(-1, 3)
    if k < 255:
        palette[255] = (224, 224, 192)  # VOC's void colour
    counts = {}
    with _new_folder(out) as staging:
        for split, dataset in datasets.items():
            folder = staging / split / "masks"
            folder.mkdir(parents=True)
            for index, (image_path, key) in enumerate(dataset.samples):
                # load_pair voids a raster's pixels without data, as training does; RGB images need not be decoded
                mask = dataset.load_pair(index)[1] if getattr(dataset, "bands", None) else dataset.load_mask(key)
                ids = np.where(mask == ignore, 255, mask).astype(np.uint8)
                png = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
                png.putpalette(palette.ravel().tolist())
                png.save(folder / f"{Path(image_path).stem}.png")
            counts[split] = len(dataset.samples)
        (staging / "classes.txt").write_text("".join(f"{name}\n" for name in datamodule.class_names))
    void = "void 255" if ignore == 255 else f"void (ignore_index {ignore}) as 255"
    listed = ", ".join(f"{split} {n}" for split, n in counts.items())
    skipped = [s.name for s in report.splits if s.name in splits and s.error is not None]
    not_read = f"; not written: {', '.join(skipped)} (could not be read, above)" if skipped else ""
    return (f"wrote {listed} masks to {out}/<split>/masks/<image stem>.png (class ids as palette indices, {void}) "
            f"and {out / 'classes.txt'} ({k} classes){not_read}")  # fmt: skip


def write_coco(datamodule: Any, out: Path, splits: tuple[str, ...] = SPLITS) -> str:
    """Write what a detection or instance DataModule trains on as COCO JSON, ``out/<split>.json`` per split: its
    images (``file_name`` relative to ``data.root``, or absolute outside it), boxes after the box policy (``bbox``
    xywh), category ids and names as the data gives them, and for instance DataModules each object's mask as RLE.
    Returns what was written, in a line."""
    from pycocotools import mask as mask_utils

    from vitdense.data.formats.coco import decode_mask

    records = {}
    for split in splits:
        try:
            records[split] = datamodule.dataset(split).records
        except (ValueError, OSError):
            if split == "train":
                raise
    category_ids = sorted(datamodule.categories)  # label i is the i-th sorted category id (formats.coco)
    categories = [{"id": int(c), "name": datamodule.categories[c]} for c in category_ids]
    masks = bool(getattr(datamodule, "MASKS", False))
    root = getattr(datamodule, "root", None)
    counts = {}
    with _new_folder(out) as staging:
        for split, split_records in records.items():
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for image_id, record in enumerate(split_records, 1):
                images.append({"id": image_id, "file_name": _file_name(Path(record.path), root),
                               "width": int(record.width), "height": int(record.height)})  # fmt: skip
                segmentations = record.segmentations if masks else [None] * len(record.boxes)
                for box, label, segmentation in zip(record.boxes, record.labels, segmentations, strict=True):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[int(label)],
                           "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}  # fmt: skip
                    if masks:
                        mask = decode_mask(segmentation, record.height, record.width)
                        rle = mask_utils.encode(np.asfortranarray(mask))
                        ann["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
                        ann["area"] = int(mask.sum())
                    annotations.append(ann)
            coco = {"images": images, "annotations": annotations, "categories": categories}
            (staging / f"{split}.json").write_text(json.dumps(coco, indent=1))
            counts[split] = (len(images), len(annotations))
    listed = ", ".join(f"{split} {n} images, {a} objects" for split, (n, a) in counts.items())
    where = f"relative to '{root}'" if root is not None else "absolute"
    return f"wrote {out}/<split>.json as COCO ({listed}; file_name {where})"


def _file_name(path: Path, root: Path | None) -> str:
    if root is not None and path.resolve().is_relative_to(Path(root).resolve()):
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    return str(path.resolve())
