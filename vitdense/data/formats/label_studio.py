"""Label Studio's JSON export -> class-id masks (segmentation) and object records (detection, instances).

The export (Label Studio's Export -> "JSON") is one ``.json`` file holding a list of tasks: ``data.image`` names the
image, ``annotations[].result[]`` holds its regions in percent of ``original_width`` / ``original_height``:

- ``polygonlabels``: ``points`` ``[[x, y], ...]``, drawn through pycocotools, as label-studio-converter's COCO export
  hands them on.
- ``rectanglelabels``: ``x, y, width, height`` and ``rotation`` (degrees, clockwise about the top-left corner, in
  pixels as Label Studio draws it; label-studio-converter's COCO export rotates in percent units, which is the same
  on square images), drawn as the polygon of its corners; a detection box is the extent of the corners.
- ``brushlabels`` (``format: rle``): Label Studio's RLE of the RGBA brush layer, decoded exactly as
  label-studio-converter's ``brush.decode_rle``; a pixel is in the region where its alpha is > 0 (as the converter's
  ``ls_rle_to_coco_rle``).

Regions are drawn in result order, a later one on top; pixels no region covers are the ``background`` class when the
classes have one, else ``ignore_index``. Keypoints and ellipses cover no area here: they are skipped, counted and
said, as are tasks with no annotation. Task-level results (choices, text, ratings) are no regions. A task's annotation
is its one not cancelled (``was_cancelled``) or, among several, its one marked ground truth; several otherwise are an
error. The image of a task is found in the image folder by ``image_names``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from vitdense.data.formats.class_table import ClassTable
from vitdense.data.formats.coco import CocoRecord, warn_box_policy
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples
from vitdense.data.formats.io import image_size
from vitdense.data.formats.polygons import Labels, _points, _require_area, check_unannotated, read_json, say_once

REGIONS = {"polygonlabels": "polygon", "rectanglelabels": "rectangle", "brushlabels": "brush"}
NO_AREA = ("keypointlabels", "ellipselabels", "keypoint", "ellipse")  # regions skipped and counted
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio names an upload '<8 hex digits>-<file name>'


def find_export(base: Path) -> Path | None:
    """The Label Studio JSON export directly in ``base``: the ``.json`` file whose text starts with ``[`` (a list of
    tasks; COCO files are objects), or ``None``. Two such files are an error naming both."""
    if not base.is_dir():
        return None
    found = []
    for path in sorted(base.glob("*.json")):
        with open(path, "rb") as file:
            if file.read(64).lstrip().startswith(b"["):
                found.append(path)
    if len(found) > 1:
        raise ValueError(
            f"'{base}' holds {len(found)} Label Studio JSON exports ({', '.join(p.name for p in found)}); keep one "
            "(the newest export holds every task)."
        )
    return found[0] if found else None


def image_names(ref: str) -> list[str]:
    """The paths under the image folder that a task's ``data.image`` may name, in the order tried.

    Local storage (``/data/local-files/?d=dir/x.jpg``): ``dir/x.jpg``, then ``x.jpg``. An upload
    (``/data/upload/<project>/<8 hex>-x.jpg``): ``<8 hex>-x.jpg``, then ``x.jpg`` (Label Studio prefixes uploaded
    files). Any other path or URL (``s3://``, ``gs://``, ``http://``): its file name.
    """
    parsed = urlparse(ref)
    names = []
    local = parse_qs(parsed.query).get("d")
    if local:
        rel = local[0].lstrip("/")
        names += [rel, PurePosixPath(rel).name]
    else:
        name = PurePosixPath(unquote(parsed.path)).name
        names += [name, name[9:] if _UPLOAD_PREFIX.match(name) else ""]
    return list(dict.fromkeys(n for n in names if n))


def decode_rle(rle: Any, where: str = "brush") -> np.ndarray:
    """Label Studio's brush RLE (thi.ng rle-pack) -> the flat uint8 values, as label-studio-converter's
    ``brush.decode_rle`` decodes them (a header of 32 bits value count, 5 bits word size - 1, four 4-bit run-length
    sizes - 1; then runs: 1 bit repeat flag, 2 bits size index, the run length - 1, and one word or one word per
    value)."""
    if not isinstance(rle, list) or not rle or not all(isinstance(v, int) and 0 <= v <= 255 for v in rle):
        raise ValueError(f"{where}: rle {str(rle)[:60]} is not a list of bytes (0..255), as Label Studio writes it.")
    bits = (np.unpackbits(np.asarray(rle, dtype=np.uint8)) + ord("0")).tobytes().decode("ascii")
    pos = 0

    def read(size: int) -> int:
        nonlocal pos
        if pos + size > len(bits):
            raise ValueError(f"{where}: its rle ends before all its values are read; export the task again.")
        pos += size
        return int(bits[pos - size : pos], 2)

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if word > 8:
        raise ValueError(f"{where}: its rle has {word}-bit values; Label Studio's brush RLE has 8-bit values.")
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            for k in range(i, min(j, num)):
                out[k] = read(word)
            i = j
    return out


@dataclass
class Region:
    """One region of a task: its kind, class id, result index and geometry (pixel points, or the brush RLE)."""

    kind: str
    cid: int
    index: int
    pts: np.ndarray | None = None
    rle: list[int] | None = None


@dataclass
class Task:
    """One annotated image of the export: its image file, size (width, height) and regions."""

    where: str
    image: Path
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)


def _choose_annotation(task: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The annotation of a task: its one not cancelled, else the one marked ground truth; ``None`` when none."""
    kept = [a for a in task.get("annotations") or [] if not (a.get("was_cancelled") or a.get("skipped"))]
    if len(kept) > 1:
        truth = [a for a in kept if a.get("ground_truth")]
        if len(truth) != 1:
            ids = ", ".join(str(a.get("id")) for a in kept)
            raise ValueError(
                f"{where} has {len(kept)} annotations (ids {ids}) and {len(truth)} marked ground truth: vitdense "
                "trains on one per image. Mark one as ground truth in Label Studio (or delete the others), then "
                "export again."
            )
        kept = truth
    return kept[0] if kept else None


def _rectangle(value: dict[str, Any], width: int, height: int, where: str) -> np.ndarray:
    """The pixel corners of a rectangle: rotated clockwise by ``rotation`` degrees about its top-left corner."""
    try:
        x, y, w, h = (float(value[k]) * s / 100 for k, s in (("x", width), ("y", height), ("width", width),
                                                               ("height", height)))  # fmt: skip
        angle = math.radians(float(value.get("rotation") or 0))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a rectangle needs numbers x, y, width, height (percent); got {value}.") from None
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    c, s = math.cos(angle), math.sin(angle)
    return corners @ np.array([[c, s], [-s, c]]) + [x, y]


class LabelStudioExport:
    """A Label Studio JSON export read and checked against its image folder: one ``Task`` per annotated image."""

    def __init__(self, path: Path, image_dir: Path, labels: Labels) -> None:
        """Read every task, choose its annotation, find its image and check its regions (labels, points, sizes)."""
        self.path, self.labels = path, labels
        data = read_json(path)
        if not isinstance(data, list):
            raise ValueError(f"'{path}' is not a Label Studio JSON export (a list of tasks); export it as 'JSON'.")
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Folder '{image_dir}' not found: the images of '{path}' go there.")
        self.image_dir = image_dir
        self.skipped: dict[str, int] = {}
        self.tasks: dict[Path, Task] = {}
        unannotated: set[Path] = set()
        for n, task in enumerate(data):
            where = f"'{path}' task {task.get('id', f'#{n}') if isinstance(task, dict) else f'#{n}'}"
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise ValueError(f"{where} has no 'data' object; is '{path}' Label Studio's JSON export?")
            image = self._image(task["data"], where)
            annotation = _choose_annotation(task, where)
            if annotation is None:
                self._skip("task(s) without an annotation")
                unannotated.add(image)
                continue
            if image in self.tasks:
                raise ValueError(f"{where} names the image '{image}' that {self.tasks[image].where} names too; keep "
                                 "one task per image.")  # fmt: skip
            self.tasks[image] = self._task(annotation.get("result") or [], image, where)
        if not self.tasks:
            raise ValueError(f"'{path}' has no annotated task; annotate the images in Label Studio and export again.")
        check_unannotated(image_dir, set(self.tasks) | unannotated, f"'{path}'")
        if self.skipped:
            counts = ", ".join(f"{n} {what}" for what, n in self.skipped.items())
            say_once(f"[vitdense] Label Studio export '{path}': skipped {counts} (no area to label).")

    def _skip(self, what: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1

    def _image(self, data: dict[str, Any], where: str) -> Path:
        ref = data.get("image")
        if not isinstance(ref, str):
            refs = [v for v in data.values() if isinstance(v, str) and PurePosixPath(urlparse(v).path).suffix.lower()
                    in IMAGE_EXTENSIONS]  # fmt: skip
            if len(refs) != 1:
                raise ValueError(f"{where}: data has no 'image' and not one image path ({list(data)}); name the "
                                 "image in data.image.")  # fmt: skip
            ref = refs[0]
        names = image_names(ref)
        for name in names:
            for candidate in (self.image_dir / name, self.image_dir / PurePosixPath(name).name):
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(
            f"{where}: data.image '{ref}' matches no file in '{self.image_dir}' (looked for {examples(names)}). Put "
            "the image there under one of these names."
        )

    def _task(self, results: list[Any], image: Path, where: str) -> Task:
        sizes = {(r.get("original_width"), r.get("original_height")) for r in results if isinstance(r, dict)
                 and (r.get("type") in REGIONS or r.get("type") in NO_AREA)}  # fmt: skip
        if len(sizes) > 1:
            raise ValueError(f"{where}: its results give different original_width/height {sorted(map(str, sizes))}; "
                             "export the task again.")  # fmt: skip
        width, height = sizes.pop() if sizes else image_size(image)
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise ValueError(f"{where}: its results lack original_width / original_height (got {width}, {height}).")
        task = Task(where, image, width, height)
        for index, result in enumerate(results):
            kind = result.get("type") if isinstance(result, dict) else None
            if kind in NO_AREA:
                self._skip(f"{kind.removesuffix('labels')}(s)")
            elif kind in REGIONS:
                task.regions.append(self._region(result, index, width, height, f"{where} result {index} ({kind})"))
        return task

    def _region(self, result: dict[str, Any], index: int, width: int, height: int, where: str) -> Region:
        kind, value = REGIONS[result["type"]], result.get("value")
        if not isinstance(value, dict):
            raise ValueError(f"{where} has no 'value' object; export the task again.")
        names = value.get(result["type"])
        if not isinstance(names, list) or len(names) != 1:
            raise ValueError(f"{where} has the labels {names!r}; each region needs exactly one label.")
        cid = self.labels.id(str(names[0]), where)
        if kind == "brush":
            if value.get("format") != "rle":
                raise ValueError(f"{where}: brush format {value.get('format')!r} is not 'rle', Label Studio's own.")
            rle = value.get("rle")
            num = int("".join(f"{b:08b}" for b in rle[:4]), 2) if isinstance(rle, list) and len(rle) >= 4 else -1
            if num != width * height * 4:
                raise ValueError(f"{where}: its rle holds {num} values, but a {width}x{height} RGBA brush layer "
                                 f"has {width * height * 4}; export the task again.")  # fmt: skip
            return Region(kind, cid, index, rle=rle)
        if kind == "rectangle":
            pts = _points(_rectangle(value, width, height, where), where, 4, width, height)
        else:
            points = value.get("points")
            try:
                pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * [width / 100, height / 100]
            except (TypeError, ValueError):
                raise ValueError(f"{where}: points {str(points)[:80]} are not a list of [x, y] pairs.") from None
            pts = _points(pts, where, 3, width, height)
        _require_area(pts, where)
        return Region(kind, cid, index, pts=pts)


def draw_region(region: Region, width: int, height: int, where: str = "brush") -> np.ndarray:
    """The ``(H, W)`` bool pixels of one checked region: a polygon (rectangles too) through pycocotools, a brush
    where its decoded alpha is > 0."""
    if region.rle is not None:
        return decode_rle(region.rle, where).reshape(height, width, 4)[:, :, 3] > 0
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects([region.pts.reshape(-1).tolist()], height, width))  # type: ignore[union-attr]
    return mask_utils.decode(rle).astype(bool)


def export_labels(path: Path, void: tuple[str, ...] = ()) -> list[str]:
    """The labels the regions of an export use (of each task's chosen annotation), sorted; void labels left out."""
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"'{path}' is not a Label Studio JSON export (a list of tasks); export it as 'JSON'.")
    names: set[str] = set()
    for n, task in enumerate(data):
        if not isinstance(task, dict):
            continue
        annotation = _choose_annotation(task, f"'{path}' task {task.get('id', f'#{n}')}")
        for result in (annotation or {}).get("result") or []:
            value = result.get("value") if isinstance(result, dict) else None
            if result.get("type") in REGIONS and isinstance(value, dict):
                names.update(str(v) for v in value.get(result["type"]) or [])
    return sorted(names - {*void, "__ignore__"})


def label_studio_class_table(path: Path) -> ClassTable:
    """The classes of an export for semantic segmentation: ``background`` (class 0, pixels no region covers), then
    the labels its regions use, sorted (Label Studio's JSON export does not list its label config)."""
    names = ["background", *[n for n in export_labels(path) if n != "background"]]
    say_once(f"[vitdense] Label Studio export '{path}': classes {names} (background = class 0 = pixels no region "
             "covers; the labels sorted; classes.txt or data.classes set them instead)")  # fmt: skip
    return ClassTable(names, source=f"the labels of '{path}' with background as class 0")


class LabelStudioReader:
    """Semantic masks of a Label Studio JSON export (``MaskReader``): regions in result order, a later one on top."""

    def __init__(self, image_dir: Path, path: Path, labels: Labels) -> None:
        """Read and check the export against the images of ``image_dir``."""
        self.export = LabelStudioExport(path, image_dir, labels)
        self.path, self.labels = path, labels

    def pairs(self) -> list[tuple[Path, Any]]:
        return sorted((image, image) for image in self.export.tasks)

    def size(self, key: Path) -> tuple[int, int]:
        return self.export.tasks[key].width, self.export.tasks[key].height

    def describe(self, key: Path) -> str:
        return self.export.tasks[key].where

    def read(self, key: Path) -> np.ndarray:
        task = self.export.tasks[key]
        mask = np.full((task.height, task.width), self.labels.fill, np.int64)
        for region in task.regions:
            mask[draw_region(region, task.width, task.height, f"{task.where} result {region.index}")] = region.cid
        return mask


def read_label_studio_objects(
    images: Path, path: Path, class_names: list[str], void: tuple[str, ...] = (), masks: bool = False
) -> list[CocoRecord]:
    """The object records of a Label Studio export over the folder ``images``: each region one object, its box the
    extent of its corners (of its brush pixels), its mask the region; void labels skipped and counted."""
    labels = Labels(class_names, -1, None, void, where_classes="data.class_names")
    export = LabelStudioExport(path, images, labels)
    counts = {"clipped": 0, "outside": 0, "void": 0}
    records = []
    for image, task in sorted(export.tasks.items()):
        boxes, cids = [], []
        record = CocoRecord(image, task.height, task.width, np.zeros((0, 4)), np.zeros(0, np.int64), source=path)
        for region in task.regions:
            where = f"{task.where} result {region.index}"
            if region.cid < 0:
                counts["void"] += 1
                continue
            if region.rle is not None:
                pixels = draw_region(region, task.width, task.height, where)
                ys, xs = np.nonzero(pixels)
                if not len(xs):
                    raise ValueError(f"{where} (brush) covers no pixel; delete it in Label Studio and export again.")
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
            else:
                box = np.concatenate([region.pts.min(axis=0), region.pts.max(axis=0)])  # type: ignore[union-attr]
            clipped = np.clip(box, 0, [task.width, task.height, task.width, task.height])
            counts["clipped"] += bool((clipped != box).any())
            boxes.append(clipped)
            cids.append(region.cid)
            if masks:
                record.segmentations.append(_Draw(region, task.width, task.height, where))
                record.ann_ids.append(f"result {region.index} of {task.where}")
        record.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        record.labels = np.asarray(cids, np.int64)
        records.append(record)
    warn_box_policy(path, counts)
    return records


@dataclass
class _Draw:
    """A region's mask, drawn when a sample is loaded (a picklable callable for DataLoader workers)."""

    region: Region
    width: int
    height: int
    where: str

    def __call__(self) -> np.ndarray:
        return draw_region(self.region, self.width, self.height, self.where)
