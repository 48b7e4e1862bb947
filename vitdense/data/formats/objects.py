"""LabelMe and CVAT annotations -> object records (boxes, labels, masks) for detection and instance segmentation.

The files are parsed and checked by the readers of ``vitdense.data.formats.polygons`` (labels among the classes, enough
points, inside the image, an area; every image paired with its annotation and the reverse), so a file reads the same
for segmentation and for detection. Each shape is one object, its records the same as COCO's (``CocoRecord``):

- LabelMe: ``polygon``, ``rectangle`` and ``circle``; the box is the shape's extent, the mask the shape as labelme
  draws it. ``line`` and ``linestrip`` enclose no object and are an error.
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
from vitdense.data.formats.masks import labelme_dir
from vitdense.data.formats.polygons import LabelMeReader, Labels, draw_labelme, read_json

ObjectFormat = Literal["auto", "coco", "labelme", "cvat"]
VOID = -1  # label id of shapes that are skipped


def locate(base: Path, annotations: ObjectFormat) -> tuple[str, Path]:
    """The format and annotations (COCO/CVAT file, LabelMe folder) of a folder ``base`` with ``images/``; ``auto``
    looks for ``annotations.json``, then ``annotations.xml``, then LabelMe JSON files."""
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
    if fmt != "cvat" or annotations is None or not annotations.is_file():
        return None
    return cvat_splits(annotations)


def format_of(path: Path, annotations: ObjectFormat) -> str:
    """The format of an annotation path given explicitly: a folder is LabelMe's, an ``.xml`` CVAT's, else COCO."""
    if annotations != "auto":
        return annotations
    return "labelme" if path.is_dir() else "cvat" if path.suffix.lower() == ".xml" else "coco"


def found_labels(fmt: str, path: Path, void: tuple[str, ...] = ()) -> list[str]:
    """The classes an annotation file or folder names: CVAT's labels (its ``meta``, in order) or the labels of every
    LabelMe file in the folder (sorted); void labels left out."""
    names: list[str] = []
    if fmt == "cvat":
        table = cvat_labels(path)
        if table is None:
            raise ValueError(f"'{path}' lists no labels in its meta; set data.class_names (or export with labels).")
        names = list(table.names)
    elif fmt == "labelme":
        for file in sorted(path.glob("*.json")):
            data = read_json(file)
            shapes = data.get("shapes") if isinstance(data, dict) else None
            names += [str(shape.get("label")) for shape in shapes or [] if isinstance(shape, dict)]
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
    if not images.is_dir():
        raise FileNotFoundError(f"Image folder '{images}' (for '{annotations}') does not exist.")
    labels = Labels(class_names, VOID, None, void, where_classes="data.class_names")
    counts = {"clipped": 0, "outside": 0, "void": 0}
    records = []
    if fmt == "labelme":
        if not annotations.is_dir():
            raise FileNotFoundError(f"LabelMe folder '{annotations}' not found; it holds one .json per image.")
        labelme = LabelMeReader(images, annotations, labels)
        for image, key in labelme.pairs():
            width, height, shapes = labelme.shapes[key]
            found = [
                _labelme_object(n, kind, cid, pts, width, height, key) for n, (kind, cid, pts) in enumerate(shapes)
            ]
            records.append(_record(image, key, width, height, found, masks, counts))
    elif fmt == "cvat":
        cvat = CvatReader(images, annotations, labels, subsets)
        for image, key in cvat.pairs():
            _, width, height, shapes = cvat.images[key]
            found = [_cvat_object(n, kind, shape, width, height) for _, n, kind, shape in shapes]
            records.append(_record(image, annotations, width, height, found, masks, counts))
    else:
        raise ValueError(f"annotations: {fmt!r} is not one of coco, labelme, cvat.")
    warn_box_policy(annotations, counts)
    return records


def _labelme_object(
    n: int, kind: str, cid: int, pts: np.ndarray, width: int, height: int, path: Path
) -> tuple[int, np.ndarray, str, Any]:
    if kind in ("line", "linestrip"):
        raise ValueError(
            f"'{path}' shape {n} ({kind}) encloses no object: detection and instance segmentation take polygon, "
            "rectangle and circle shapes. Draw the object as one of those, or delete the line."
        )
    if kind == "circle":
        (cx, cy), (px, py) = pts
        r = float(np.hypot(cx - px, cy - py))
        box = np.array([cx - r, cy - r, cx + r, cy + r])
    else:
        box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
    draw = partial(draw_labelme, kind, pts, width, height)
    return cid, box, f"shape {n} ({kind})", draw


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
