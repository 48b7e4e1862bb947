"""The data as vitdense will train on it, written in the plainest standard form for ``vitdense data --write``:
``write_masks`` (class-id palette PNGs per split and ``classes.txt``), ``write_coco`` (COCO JSON per split for
detection and instance DataModules). Into a new folder only, staged and renamed at the end, so an error leaves
nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitdense.data.report import SPLITS, DataReport


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
