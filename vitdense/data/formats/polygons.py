"""Polygon annotations -> class-id masks: COCO JSON and LabelMe JSON (one file per image); CVAT in ``formats.cvat``.

Every shape is checked when the reader is built (label in the classes, enough points, inside the image, an area),
so a bad shape is an error naming its file and shape before training starts. Drawing rules, per format:

- COCO: polygons and RLEs through pycocotools; larger regions first, so a smaller region lies on top (COCO-Stuff's
  rule); ``iscrowd`` regions are drawn last as ``ignore_index``.
- LabelMe: labelme's own ``shape_to_mask`` semantics (Pillow drawing; polygon, rectangle, circle, line and linestrip
  of ``line_width`` pixels); shapes in file order, a later one on top.

Pixels no shape covers get the ``background`` class when the classes have one, else ``ignore_index``; labels named
as void (and LabelMe's ``__ignore__``) are drawn as ``ignore_index``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vitdense.data.formats.coco import check_segmentation, decode_mask, parse_categories, read_coco_json
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples, list_files, pair_by_key


@dataclass
class Labels:
    """Label name -> class id for drawing: classes, void labels, and the id of uncovered pixels."""

    names: list[str]
    ignore_index: int
    background: str | None = "background"
    void: tuple[str, ...] = ()
    where_classes: str = "the class table (classes.txt / data.classes)"

    def __post_init__(self) -> None:
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.ids.update({name: self.ignore_index for name in (*self.void, "__ignore__")})
        self.fill = self.ids.get(self.background, self.ignore_index) if self.background else self.ignore_index

    def id(self, label: str, where: str) -> int:
        if label not in self.ids:
            raise ValueError(
                f"{where} has the label {label!r}, which is not a class ({examples(self.names, 12)}). Add it to "
                f"{self.where_classes}, name it in void_classes, or fix the label."
            )
        return self.ids[label]


def _points(values: Any, where: str, min_points: int, width: int, height: int) -> np.ndarray:
    """Check a shape's points: numbers, enough of them, within the image (1 pixel of tolerance)."""
    try:
        pts = np.asarray(values, dtype=float).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: points {str(values)[:80]} are not a list of x, y pairs.") from None
    if len(pts) < min_points or not np.isfinite(pts).all():
        raise ValueError(f"{where} has {len(pts)} point(s); it needs at least {min_points} finite x, y pairs.")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if lo[0] < -1 or lo[1] < -1 or hi[0] > width + 1 or hi[1] > height + 1:
        raise ValueError(
            f"{where} reaches x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, outside its {width}x{height} "
            "image (width x height). Fix the shape or the image size in the annotation."
        )
    return pts


def _require_area(pts: np.ndarray, where: str) -> None:
    x, y = pts[:, 0], pts[:, 1]
    if abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2 < 1e-6:
        raise ValueError(f"{where} is degenerate (its points enclose no area); delete or redraw it.")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}.") from err


def _image_path(image_dir: Path, name: str, where: str) -> Path:
    for candidate in (image_dir / name, image_dir / Path(name).name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{where} annotates the image '{name}', which is not in '{image_dir}'. Add the image or "
                            "remove its annotations.")  # fmt: skip


def check_unannotated(image_dir: Path, annotated: set[Path], source: str) -> None:
    missing = sorted(p.name for p in list_files(image_dir, IMAGE_EXTENSIONS) if p not in annotated)
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) in '{image_dir}' have no entry in {source} (e.g. {examples(missing)}). Annotate "
            "them (an image with no shapes is all background), or move them out of the folder."
        )


class CocoReader:
    """COCO JSON (``root/annotations.json`` beside ``root/images``): one mask per image from its annotations."""

    def __init__(self, image_dir: Path, path: Path, labels: Labels, match: str = "name") -> None:
        """Read and check the file; ``match``: categories map to classes by ``name`` or by ``id``."""
        self.path, self.labels = path, labels
        data = read_coco_json(path)
        categories = parse_categories(data.get("categories"), path)
        self.class_of: dict[int, int] = {}
        for cid, name in categories.items():
            if match == "id":
                self.class_of[cid] = cid if 0 <= cid < len(labels.names) else -1
            else:
                self.class_of[cid] = labels.ids.get(name, -1)
        self.images: dict[int, tuple[Path, int, int]] = {}
        for img in data["images"]:
            where = f"'{path}' image id {img.get('id')}"
            if not {"id", "file_name", "width", "height"} <= set(img):
                raise ValueError(f"{where} lacks one of id, file_name, width, height; COCO images need all four.")
            self.images[img["id"]] = (_image_path(image_dir, img["file_name"], where), img["width"], img["height"])
        if not self.images:
            raise ValueError(f"'{path}' lists no images; export the annotations again with the images included.")
        check_unannotated(image_dir, {p for p, _, _ in self.images.values()}, f"'{path}'")
        self.anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self.images}
        for ann in data.get("annotations") or []:
            self._check(ann, categories)
            self.anns[ann["image_id"]].append(ann)

    def _check(self, ann: dict[str, Any], categories: dict[int, str]) -> None:
        where = f"'{self.path}' annotation id {ann.get('id')}"
        if ann.get("image_id") not in self.images:
            raise ValueError(f"{where} refers to image id {ann.get('image_id')}, which is not in 'images'.")
        cid = ann.get("category_id")
        if cid not in categories:
            raise ValueError(f"{where} has category_id {cid}, which is not in 'categories'.")
        if self.class_of[cid] < 0 and not ann.get("iscrowd"):
            raise ValueError(
                f"{where} has the category {categories[cid]!r} (id {cid}), which is no class "
                f"({examples(self.labels.names, 12)}). Add it to the class table or fix the category."
            )
        _, width, height = self.images[ann["image_id"]]
        check_segmentation(ann.get("segmentation"), height, width, f"{ann.get('id')} in '{self.path}'")
        for polygon in ann["segmentation"] if isinstance(ann["segmentation"], list) else []:
            _require_area(np.asarray(polygon, float).reshape(-1, 2), f"{where} (polygon)")

    def pairs(self) -> list[tuple[Path, Any]]:
        return sorted((path, image_id) for image_id, (path, _, _) in self.images.items())

    def size(self, key: int) -> tuple[int, int]:
        return self.images[key][1], self.images[key][2]

    def describe(self, key: int) -> str:
        return f"'{self.path}' image '{self.images[key][0].name}' (id {key})"

    def read(self, key: int) -> np.ndarray:
        _, width, height = self.images[key]
        mask = np.full((height, width), self.labels.fill, np.int64)
        regions = []
        for ann in self.anns[key]:
            region = decode_mask(ann["segmentation"], height, width).astype(bool)
            if not region.any():
                raise ValueError(f"'{self.path}' annotation id {ann.get('id')} covers no pixel; delete or redraw it.")
            crowd = bool(ann.get("iscrowd"))
            regions.append((crowd, -int(region.sum()), region, self.labels.ignore_index if crowd else
                            self.class_of[ann["category_id"]]))  # fmt: skip
        for _, _, region, cid in sorted(regions, key=lambda r: (r[0], r[1])):  # large first, crowd last
            mask[region] = cid
        return mask


LABELME_MIN_POINTS = {"polygon": 3, "rectangle": 2, "circle": 2, "line": 2, "linestrip": 2}


class LabelMeReader:
    """LabelMe JSON, one per image (in ``root/annotations`` or beside the images), paired with images by stem."""

    def __init__(self, image_dir: Path, ann_dir: Path, labels: Labels, line_width: int = 10) -> None:
        """List, pair and check every JSON file; ``line_width``: pixel width of line and linestrip shapes."""
        self.labels, self.line_width = labels, line_width
        images = {p.stem: p for p in list_files(image_dir, IMAGE_EXTENSIONS)}
        jsons = {p.stem: p for p in list_files(ann_dir, (".json",))}
        if not jsons:
            raise ValueError(f"No LabelMe JSON files in '{ann_dir}'; export one .json per image from LabelMe.")
        self.samples = pair_by_key(images, jsons, image_dir, ann_dir)
        self.shapes: dict[Path, tuple[int, int, list[tuple[str, int, np.ndarray]]]] = {}
        for _, path in self.samples:
            self.shapes[path] = self._parse(path)

    def _parse(self, path: Path) -> tuple[int, int, list[tuple[str, int, np.ndarray]]]:
        data = read_json(path)
        if not isinstance(data, dict) or "shapes" not in data:
            raise ValueError(f"'{path}' has no 'shapes' list; is it a LabelMe annotation?")
        if not isinstance(data.get("imageWidth"), int) or not isinstance(data.get("imageHeight"), int):
            raise ValueError(f"'{path}' lacks imageWidth / imageHeight; save it again with LabelMe.")
        width, height = data["imageWidth"], data["imageHeight"]
        shapes = []
        for n, shape in enumerate(data["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            where = f"'{path}' shape {n} ({kind} {shape.get('label')!r})"
            if kind not in LABELME_MIN_POINTS:
                raise ValueError(f"{where}: shape type {kind!r} is not one of {', '.join(LABELME_MIN_POINTS)}.")
            cid = self.labels.id(str(shape.get("label")), where)
            pts = _points(shape.get("points"), where, LABELME_MIN_POINTS[kind], width, height)
            if kind in ("rectangle", "circle", "line") and len(pts) != 2:
                raise ValueError(f"{where} has {len(pts)} points; a {kind} has exactly 2.")
            if kind == "polygon":
                _require_area(pts, where)
            elif (len(pts) == 2 and np.allclose(pts[0], pts[1])) or (kind == "rectangle" and (pts[0] == pts[1]).any()):
                raise ValueError(f"{where} is degenerate (zero size); delete or redraw it.")
            shapes.append((kind, cid, pts))
        return width, height, shapes

    def pairs(self) -> list[tuple[Path, Any]]:
        return list(self.samples)

    def size(self, key: Path) -> tuple[int, int]:
        return self.shapes[key][0], self.shapes[key][1]

    def describe(self, key: Path) -> str:
        return f"'{key}'"

    def read(self, key: Path) -> np.ndarray:
        width, height, shapes = self.shapes[key]
        mask = np.full((height, width), self.labels.fill, np.int64)
        for kind, cid, pts in shapes:
            mask[draw_labelme(kind, pts, width, height, self.line_width)] = cid
        return mask


def draw_labelme(kind: str, pts: np.ndarray, width: int, height: int, line_width: int = 10) -> np.ndarray:
    """The ``(H, W)`` bool region of one checked LabelMe shape, as ``labelme.utils.shape_to_mask`` draws it."""
    canvas = Image.new("L", (width, height), 0)
    draw, xy = ImageDraw.Draw(canvas), [tuple(p) for p in pts.tolist()]
    if kind == "circle":
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=line_width)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.asarray(canvas, bool)
