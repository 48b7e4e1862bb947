"""YOLO / Ultralytics exports -> class-id masks (segmentation) and object records (detection, instances).

The layout Ultralytics and Roboflow write: ``data.yaml`` at data.root with ``names`` (a list, or a dict id -> name),
``train`` / ``val`` / ``test`` (a folder of images, a list of folders, or a ``.txt`` list of image paths) and
optionally ``path``. An image's labels are the ``.txt`` of its stem where its path has ``labels`` for its last
``images`` folder (``images/train/a.jpg`` -> ``labels/train/a.txt``), one object a line: ``class xc yc w h`` (a box)
or ``class x1 y1 x2 y2 x3 y3 ...`` (a polygon), normalised to 0..1 of the image's width and height.

Paths resolve as ultralytics' ``check_det_dataset`` does: against ``path`` (absolute, or relative to the yaml's
folder) when that folder exists, else the yaml's folder; a ``../x`` that does not exist is read as ``x`` (Roboflow's
``../train/images``). The splits are the yaml's; ``.txt`` lists name images relative to the list's folder.

Conventions, said when read:

- An image without a label file has no objects (ultralytics' background images).
- Detection: YOLO class k is label k; a polygon's box is its extent (ultralytics' ``segments2boxes``).
- Semantic segmentation: YOLO has no background class, so class 0 ``background`` is added for pixels no polygon covers
  and YOLO class k is class k + 1. Polygons are drawn as ultralytics' ``polygon2mask`` draws them (``cv2.fillPoly`` on
  pixel coordinates truncated to int32), larger first so that a smaller one lies on top (``polygons2masks_overlap``).
  A box line has no outline to draw: an error.
- Identical repeated lines are dropped and counted (ultralytics drops duplicate labels too).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vitdense.data.formats.class_table import ClassTable
from vitdense.data.formats.coco import CocoRecord
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples
from vitdense.data.formats.io import image_size
from vitdense.data.formats.polygons import say_once

SPLITS = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "data.yml")
LINES = "`class xc yc w h` (a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon), normalised to 0..1"


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"'{path}' is not valid YAML: {str(err).splitlines()[0]}.") from err


def find_yaml(base: Path) -> Path | None:
    """The dataset yaml of a YOLO export at ``base``: ``data.yaml`` (``data.yml``), else the one ``*.yaml`` there that
    has ``names`` and ``train``; ``None`` when there is none."""
    if not base.is_dir():
        return None
    for name in YAML_NAMES:
        if (base / name).is_file():
            return base / name
    found = []
    for path in sorted([*base.glob("*.yaml"), *base.glob("*.yml")]):
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "names" in data and "train" in data:
            found.append(path)
    return found[0] if len(found) == 1 else None


@dataclass
class YoloObject:
    """One label line: YOLO class, ``box`` or ``polygon``, its pixel points (a box: its two corners) and line."""

    cls: int
    kind: str
    pts: np.ndarray
    line: int


class YoloExport:
    """A YOLO dataset yaml, checked: class names, dataset folder, and the images of each split."""

    def __init__(self, path: Path) -> None:
        """Read and check the yaml (``names``, ``nc``, ``path``)."""
        self.path = path
        data = _load_yaml(path)
        if not isinstance(data, dict) or "names" not in data:
            raise ValueError(f"'{path}' has no 'names'; a YOLO data.yaml lists its classes (names: [cat, dog]).")
        names = data["names"]
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise ValueError(f"'{path}' names the class ids {sorted(names)}; they must run 0..{len(names) - 1}.")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            raise ValueError(f"'{path}': names {names!r} is not a list or dict of class names.")
        self.names = [str(n) for n in names]
        if "nc" in data and data["nc"] != len(self.names):
            raise ValueError(f"'{path}' has nc: {data['nc']} but names lists {len(self.names)} classes; fix one.")
        if data.get("kpt_shape"):
            raise ValueError(f"'{path}' is a keypoint (pose) dataset (kpt_shape); vitdense reads boxes and polygons.")
        self.data, self.base = data, path.parent
        given = data.get("path")
        if given:
            folder = Path(str(given)) if Path(str(given)).is_absolute() else path.parent / str(given)
            self.base = folder if folder.is_dir() else path.parent

    def entry(self, split: str) -> list[Path]:
        """The folders / list files of a split, resolved (``../x`` read as ``x`` when it does not exist)."""
        if split not in SPLITS:
            raise ValueError(f"'{self.path}': split {split!r} is not one of {', '.join(SPLITS)}.")
        value = self.data.get(split)
        if not value:
            raise ValueError(
                f"'{self.path}' has no '{split}:' entry, so the {split} split has no images. Add one (e.g. {split}: "
                f"images/{split}) and put its images there."
            )
        entries = []
        for item in value if isinstance(value, list) else [value]:
            resolved = (self.base / str(item)).resolve()
            if not resolved.exists() and str(item).startswith("../"):
                resolved = (self.base / str(item)[3:]).resolve()
            if not resolved.exists():
                raise FileNotFoundError(f"'{self.path}' {split}: '{item}' is not found as '{resolved}'. Fix the path "
                                        "(relative to the yaml's folder or its 'path').")  # fmt: skip
            entries.append(resolved)
        return entries

    def images(self, split: str) -> list[Path]:
        """The images of a split, sorted: every image under its folders (recursively), or listed in its ``.txt``."""
        found: list[Path] = []
        for entry in self.entry(split):
            if entry.is_dir():
                found += [p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
                continue
            for n, line in enumerate(entry.read_text().splitlines(), 1):
                if line.strip():
                    image = entry.parent / line.strip()
                    if not image.is_file():
                        raise FileNotFoundError(f"'{entry}' line {n}: the image '{line.strip()}' is not found as "
                                                f"'{image}'. Fix the line or add the image.")  # fmt: skip
                    found.append(image)
        if not found:
            listed = ", ".join(repr(str(e)) for e in self.entry(split))
            raise ValueError(f"'{self.path}' {split}: no images in {listed}; put the split's images there.")
        return sorted(set(found))

    @staticmethod
    def label_file(image: Path) -> Path:
        """The label file of an image: its last ``images`` folder read as ``labels``, the suffix ``.txt``."""
        parts = list(image.parts)
        for i in range(len(parts) - 2, -1, -1):
            if parts[i] == "images":
                parts[i] = "labels"
                break
        return Path(*parts).with_suffix(".txt")

    def objects(self, image: Path, width: int, height: int, counts: dict[str, int]) -> list[YoloObject]:
        """The checked objects of an image (none without a label file); ``counts`` adds missing files, duplicates."""
        path = self.label_file(image)
        if not path.is_file():
            counts["no label file"] = counts.get("no label file", 0) + 1
            return []
        found, seen = [], set()
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if not text.strip():
                continue
            where = f"'{path}' line {n}"
            try:
                values = [float(v) for v in text.split()]
            except ValueError:
                raise ValueError(f"{where}: {text.strip()[:60]!r} is not numbers; YOLO lines are {LINES}.") from None
            if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
                raise ValueError(f"{where} has {len(values)} values; YOLO lines are {LINES}.")
            cls = values[0]
            if cls != int(cls) or not 0 <= cls < len(self.names):
                raise ValueError(f"{where} has the class {values[0]:g}, but '{self.path}' names {len(self.names)} "
                                 f"classes (ids 0..{len(self.names) - 1}). Fix the line or the names.")  # fmt: skip
            coords = np.asarray(values[1:], np.float64)
            if coords.min() < -0.01 or coords.max() > 1:  # ultralytics' own bounds
                raise ValueError(f"{where} has coordinates {coords.min():g}..{coords.max():g}; YOLO coordinates are "
                                 "normalised to 0..1 of the image's width and height.")  # fmt: skip
            if tuple(values) in seen:
                counts["repeated line(s) dropped"] = counts.get("repeated line(s) dropped", 0) + 1
                continue
            seen.add(tuple(values))
            if len(values) == 5:
                xc, yc, w, h = coords * [width, height, width, height]
                if w <= 0 or h <= 0:
                    raise ValueError(f"{where}: its box has width {values[3]:g} and height {values[4]:g}; both must "
                                     "be > 0.")  # fmt: skip
                pts = np.array([[xc - w / 2, yc - h / 2], [xc + w / 2, yc + h / 2]])
                found.append(YoloObject(int(cls), "box", np.clip(pts, 0, [width, height]), n))
            else:
                found.append(YoloObject(int(cls), "polygon", coords.reshape(-1, 2) * [width, height], n))
        return found

    @cached_property
    def class_table(self) -> ClassTable:
        """Classes for semantic segmentation: ``background`` (class 0) then the yaml's names (YOLO class k = k + 1)."""
        names = ["background", *self.names]
        say_once(f"[vitdense] YOLO export '{self.path}': classes {names} (class 0 'background' added for pixels no "
                 "polygon covers; YOLO class k is class k + 1)")  # fmt: skip
        return ClassTable(names, source=f"'{self.path}' names with background added as class 0")


def polygon_mask(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ``(H, W)`` bool pixels of a pixel polygon as ultralytics' ``polygon2mask`` draws it."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.asarray(pts, dtype=np.int32).reshape(-1, 2)], color=1)
    return mask.astype(bool)


def _say_counts(export: YoloExport, split: str, counts: dict[str, int]) -> None:
    if counts:
        said = ", ".join(f"{n} {what}" for what, n in counts.items())
        say_once(f"[vitdense] YOLO export '{export.path}' {split}: {said} (an image without a label file has no "
                 "objects, as ultralytics reads it)")  # fmt: skip


class YoloReader:
    """Semantic masks of one split of a YOLO export (``MaskReader``): background 0, YOLO class k -> k + 1."""

    def __init__(self, export: YoloExport, split: str) -> None:
        """List the split's images and check every label file."""
        self.export, self.split = export, split
        _ = export.class_table  # said once
        self.samples = export.images(split)
        counts: dict[str, int] = {}
        for image in self.samples:
            objects = export.objects(image, *image_size(image), counts)
            boxes = [o.line for o in objects if o.kind == "box"]
            if boxes:
                raise ValueError(
                    f"'{export.label_file(image)}' line {boxes[0]} is a box (class xc yc w h), which has no outline "
                    "for a segmentation mask. Export the dataset as YOLO segmentation (polygons), or train detection "
                    "(CocoDetectionDataModule) on it."
                )
        _say_counts(export, split, counts)

    def pairs(self) -> list[tuple[Path, Any]]:
        return [(image, image) for image in self.samples]

    def size(self, key: Path) -> tuple[int, int]:
        return image_size(key)

    def describe(self, key: Path) -> str:
        return f"'{self.export.label_file(key)}'"

    def read(self, key: Path) -> np.ndarray:
        width, height = image_size(key)
        mask = np.zeros((height, width), np.int64)
        regions = [(polygon_mask(o.pts, width, height), o.cls + 1) for o in self.export.objects(key, width, height, {})]
        for region, cid in sorted(regions, key=lambda r: -int(r[0].sum())):  # stable: larger first, smaller on top
            mask[region] = cid
        return mask


@dataclass
class _Draw:
    """An object's mask, drawn when a sample is loaded (picklable for DataLoader workers)."""

    pts: np.ndarray
    width: int
    height: int

    def __call__(self) -> np.ndarray:
        return polygon_mask(self.pts, self.width, self.height)


def read_yolo_objects(export: YoloExport, split: str, class_names: list[str], masks: bool = False) -> list[CocoRecord]:
    """The object records of one split: YOLO class k is label k, a box line its box, a polygon its extent (and mask)."""
    if len(class_names) != len(export.names):
        raise ValueError(f"data.class_names lists {len(class_names)} classes but '{export.path}' names "
                         f"{len(export.names)} ({examples(export.names)}); leave data.class_names unset.")  # fmt: skip
    counts: dict[str, int] = {}
    records = []
    for image in export.images(split):
        width, height = image_size(image)
        source = export.label_file(image)
        record = CocoRecord(image, height, width, np.zeros((0, 4)), np.zeros(0, np.int64), source=source)
        boxes, labels = [], []
        for obj in export.objects(image, width, height, counts):
            labels.append(obj.cls)
            if obj.kind == "box":
                if masks:
                    raise ValueError(f"'{export.label_file(image)}' line {obj.line} is a box (class xc yc w h), which "
                                     "has no outline for an instance mask. Export the dataset as YOLO segmentation "
                                     "(polygons), or train detection.")  # fmt: skip
                boxes.append(obj.pts.reshape(-1))
            else:
                boxes.append(np.concatenate([obj.pts.min(axis=0), obj.pts.max(axis=0)]).clip(0, [width, height] * 2))
                if masks:
                    record.segmentations.append(_Draw(obj.pts, width, height))
                    record.ann_ids.append(f"line {obj.line}")
        record.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        record.labels = np.asarray(labels, np.int64)
        records.append(record)
    _say_counts(export, split, counts)
    return records
