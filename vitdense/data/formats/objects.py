"""LabelMe and CVAT annotations -> object records (boxes, labels, masks) for detection and instance segmentation.

The files are parsed and checked by the readers of ``vitdense.data.formats.polygons`` (labels among the classes, enough
points, inside the image, an area; every image paired with its annotation and the reverse), so a file reads the same
for segmentation and for detection. Each shape is one object, its records the same as COCO's (``CocoRecord``):

- LabelMe: ``polygon``, ``rectangle``, ``oriented_rectangle``, ``circle`` and ``mask``; shapes of one label with the
  same ``group_id`` in one image are one object (``labelme2coco.py``'s rule), its box their extent, its mask their
  union as labelme draws them. ``line``, ``linestrip`` and ``point`` enclose no object: skipped, counted and said.
- CVAT for images 1.1 (``data.formats.cvat``; task and project exports, a project's subsets its splits): ``box`` (a
  rotated one by its corners), ``polygon`` and ``mask``; the box is the extent of the points (of the mask's pixels),
  the mask the shape as CVAT's mask export draws it. Polylines and points with a ``width`` attribute are objects too
  (their extent grown by half the width); other polylines and points, ellipses, skeletons, cuboids and shapes with no
  label are skipped and counted, as CVAT's mask export skips them. ``tag`` entries are no objects.

Every object keeps its whole shape as its mask (overlapping shapes are not cut by z-order or file order). Shapes of
void labels (``__ignore__``, ``void_classes``) are skipped, and boxes reaching past the image (the readers allow one
pixel) clipped to it; one warning per file or folder counts both.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vitdense.data.formats.coco import CocoRecord, warn_box_policy
from vitdense.data.formats.cvat import CvatReader, cvat_box, cvat_labels, cvat_splits, draw_cvat, find_cvat_xml
from vitdense.data.formats.label_studio import export_labels, find_export, read_label_studio_objects
from vitdense.data.formats.masks import labelme_dir
from vitdense.data.formats.polygons import LabelMeReader, LabelMeShape, Labels, draw_labelme, read_json, say_once
from vitdense.data.formats.yolo import SPLITS as YOLO_SPLITS
from vitdense.data.formats.yolo import YoloExport, find_yaml, read_yolo_objects

ObjectFormat = Literal["auto", "coco", "labelme", "cvat", "label_studio", "yolo"]
VOID = -1  # label id of shapes that are skipped
NO_OBJECT = ("point", "line", "linestrip")  # LabelMe shapes that enclose no object


def locate(base: Path, annotations: ObjectFormat) -> tuple[str, Path]:
    """The format and annotations (COCO/CVAT file, LabelMe folder) of a folder ``base`` with ``images/``; ``auto``
    looks for ``annotations.json``, then ``annotations.xml``, then LabelMe JSON files (a YOLO ``data.yaml`` and a
    Label Studio JSON export come first)."""
    if annotations in ("auto", "yolo") and find_yaml(base) is not None:
        return "yolo", find_yaml(base)  # type: ignore[return-value]
    if annotations in ("auto", "label_studio") and find_export(base) is not None:
        return "label_studio", find_export(base)  # type: ignore[return-value]
    if annotations == "yolo":
        return "yolo", base / "data.yaml"
    fmt: str = annotations
    if annotations == "auto" and not (base / "annotations.json").is_file():
        # nothing found: COCO's path, reported missing when the split is used (a test folder may have no labels)
        fmt = "cvat" if find_cvat_xml(base) else "labelme" if labelme_dir(base) else "coco"
    elif annotations == "auto":
        fmt = "coco"
    if fmt == "labelme":
        return fmt, labelme_dir(base) or base / "annotations"
    if fmt == "cvat":
        return fmt, find_cvat_xml(base) or base / "annotations.xml"
    return fmt, base / "annotations.json"


def export_splits(fmt: str, annotations: Path | None) -> dict[str, tuple[str, ...]] | None:
    """The splits an annotation file names itself (``{split: its subsets}``: a CVAT project export's subsets), or
    ``None`` (the one-folder split applies)."""
    if fmt == "yolo" and annotations is not None and annotations.is_file():  # data.yaml's train / val / test
        return {split: (split,) for split in YOLO_SPLITS}
    if fmt != "cvat" or annotations is None or not annotations.is_file():
        return None
    return cvat_splits(annotations)


def format_of(path: Path, annotations: ObjectFormat) -> str:
    """The format of an annotation path given explicitly: a folder is LabelMe's, an ``.xml`` CVAT's, else COCO."""
    if annotations != "auto":
        return annotations
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if path.suffix.lower() == ".json" and path.is_file() and find_export(path.parent) == path:
        return "label_studio"
    return "labelme" if path.is_dir() else "cvat" if path.suffix.lower() == ".xml" else "coco"


def found_labels(fmt: str, path: Path, void: tuple[str, ...] = ()) -> list[str]:
    """The classes an annotation file or folder names: CVAT's labels (its ``meta``, in order) or the labels of every
    LabelMe file in the folder (sorted; shapes that enclose no object, a point or line, name none); void labels left
    out."""
    names: list[str] = []
    if fmt == "label_studio":
        return export_labels(path, void)
    if fmt == "yolo":
        return YoloExport(path).names
    if fmt == "cvat":
        table = cvat_labels(path)
        if table is None:
            raise ValueError(f"'{path}' lists no labels in its meta; set data.class_names (or export with labels).")
        names = list(table.names)
    elif fmt == "labelme":
        for file in sorted(path.glob("*.json")):
            data = read_json(file)
            shapes = data.get("shapes") if isinstance(data, dict) else None
            names += [
                str(shape.get("label"))
                for shape in shapes or []
                if isinstance(shape, dict) and shape.get("shape_type") not in NO_OBJECT
            ]
        names = sorted(set(names))
    return [name for name in names if name not in (*void, "__ignore__")]


def read_objects(
    fmt: str,
    images: Path,
    annotations: Path,
    class_names: list[str],
    void: tuple[str, ...] = (),
    masks: bool = False,
    subsets: tuple[str, ...] | None = None,
) -> list[CocoRecord]:
    """The records of a LabelMe folder or CVAT file (``fmt``) over the folder ``images``, labels by ``class_names``
    (``subsets``: only the images of these subsets of a CVAT project export).

    Raises:
        ValueError: A shape has an unknown label, is degenerate, leaves its image or is no object (a line); an image
            has no annotation or an annotation no image (each message names the file and shape).
    """
    if fmt == "yolo":  # its images are data.yaml's
        return read_yolo_objects(YoloExport(annotations), subsets[0] if subsets else "train", class_names, masks)
    if fmt == "label_studio":
        return read_label_studio_objects(images, annotations, class_names, void, masks)
    if not images.is_dir():
        raise FileNotFoundError(f"Image folder '{images}' (for '{annotations}') does not exist.")
    labels = Labels(class_names, VOID, None, void, where_classes="data.class_names")
    counts = {"clipped": 0, "outside": 0, "void": 0}
    records = []
    if fmt == "labelme":
        if not annotations.is_dir():
            raise FileNotFoundError(f"LabelMe folder '{annotations}' not found; it holds one .json per image.")
        labelme = LabelMeReader(images, annotations, labels, semantic=False)
        lines: dict[str, int] = {}
        for image, key in labelme.pairs():
            width, height, shapes = labelme.shapes[key]
            found = [_labelme_object(group, width, height) for group in _labelme_instances(shapes, lines)]
            records.append(_record(image, key, width, height, found, masks, counts))
        notes = labelme.skipped_notes(lines)
        if notes:
            say_once(f"[vitdense] LabelMe '{annotations}': {'; '.join(notes)}")
    elif fmt == "cvat":
        cvat = CvatReader(images, annotations, labels, subsets)
        for image, key in cvat.pairs():
            _, width, height, cvat_shapes = cvat.images[key]
            found = [_cvat_object(n, kind, shape, width, height) for _, n, kind, shape in cvat_shapes]
            records.append(_record(image, annotations, width, height, found, masks, counts))
    else:
        raise ValueError(f"annotations: {fmt!r} is not one of coco, labelme, cvat.")
    warn_box_policy(annotations, counts)
    return records


def _labelme_instances(shapes: list[LabelMeShape], skipped: dict[str, int]) -> list[list[LabelMeShape]]:
    """The objects of one LabelMe file: shapes of one label with the same ``group_id`` are one object, a shape without
    one is an object of its own (``labelme2coco.py``); lines enclose no object and are counted in ``skipped``."""
    objects: dict[Any, list[LabelMeShape]] = {}
    for shape in shapes:
        if shape.kind in NO_OBJECT:
            skipped[shape.kind] = skipped.get(shape.kind, 0) + 1
            continue
        key = (shape.label, shape.group_id) if shape.group_id is not None else shape.number
        objects.setdefault(key, []).append(shape)
    return list(objects.values())


def _labelme_object(group: list[LabelMeShape], width: int, height: int) -> tuple[int, np.ndarray, str, Any]:
    boxes = []
    for shape in group:
        if shape.kind == "circle":
            (cx, cy), (px, py) = shape.pts
            r = float(np.hypot(cx - px, cy - py))
            boxes.append([cx - r, cy - r, cx + r, cy + r])
        elif shape.region is not None:  # a mask: the extent of its pixels
            ys, xs = np.nonzero(shape.region)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        else:
            boxes.append([*shape.pts.min(axis=0), *shape.pts.max(axis=0)])
    extent = np.asarray(boxes, dtype=np.float64)
    box = np.concatenate([extent[:, :2].min(axis=0), extent[:, 2:].max(axis=0)])
    first = group[0]
    name = f"shape {first.number} ({first.kind})"
    if len(group) > 1:
        name = f"shapes {', '.join(str(s.number) for s in group)} (group_id {first.group_id})"
    return first.cid, box, name, partial(_draw_group, tuple(group), width, height)


def _draw_group(group: tuple[LabelMeShape, ...], width: int, height: int) -> np.ndarray:
    """The union of the regions of one object's shapes."""
    return np.logical_or.reduce([draw_labelme(shape, width, height) for shape in group])


def _cvat_object(
    n: int, kind: str, shape: tuple[Any, ...], width: int, height: int
) -> tuple[int, np.ndarray, str, Any]:
    return shape[0], cvat_box(kind, shape), f"shape {n} ({kind})", partial(draw_cvat, kind, shape, width, height)


def _record(
    image: Path, source: Path, width: int, height: int, found: list[Any], masks: bool, counts: dict[str, int]
) -> CocoRecord:
    record = CocoRecord(image, height, width, np.zeros((0, 4)), np.zeros(0, np.int64), source=source)
    boxes, labels = [], []
    for cid, box, name, draw in found:
        if cid == VOID:
            counts["void"] += 1
            continue
        clipped = np.clip(box, 0, [width, height, width, height])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            counts["outside"] += 1
            continue
        counts["clipped"] += bool((clipped != box).any())
        boxes.append(clipped)
        labels.append(cid)
        if masks:
            record.segmentations.append(draw)
            record.ann_ids.append(name)
    record.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    record.labels = np.asarray(labels, dtype=np.int64)
    return record
