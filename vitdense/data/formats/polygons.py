"""Polygon annotations -> class-id masks: COCO JSON and LabelMe JSON (one file per image); CVAT in ``formats.cvat``.

Every shape is checked when the reader is built (label in the classes, enough points, inside the image, an area),
so a bad shape is an error naming its file and shape before training starts. Drawing rules, per format:

- COCO: polygons and RLEs through pycocotools; larger regions first, so a smaller region lies on top (COCO-Stuff's
  rule); ``iscrowd`` regions are drawn last as ``ignore_index``.
- LabelMe: labelme's own ``shape_to_mask`` semantics (Pillow drawing; polygon, rectangle, oriented_rectangle, circle,
  line and linestrip of ``line_width`` pixels); shapes in file order, a later one on top. ``point`` shapes have no
  area: they are skipped and counted (labelme2voc paints a disc of radius 5 for each).

Pixels no shape covers get the ``background`` class (labelme's ``_background_``) when the classes have one, else
``ignore_index`` (COCO, CVAT); for LabelMe, whose converter makes that area class 0, a table without it is an error
unless ``polygons.background`` says what the area is. Labels named as void (and LabelMe's ``__ignore__``) are drawn as
``ignore_index``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw

from vitdense.data.formats.class_table import LABELME_BACKGROUND, LABELME_IGNORE
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
        self.ids.update({name: self.ignore_index for name in (*self.void, LABELME_IGNORE)})
        if self.background == "background" and "background" not in self.ids and LABELME_BACKGROUND in self.ids:
            self.background = LABELME_BACKGROUND  # labelme's name for it (labelme2voc's class 0)
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


LABELME_MIN_POINTS = {"polygon": 3, "rectangle": 2, "oriented_rectangle": 4, "circle": 2, "line": 2, "linestrip": 2,
                      "mask": 2, "point": 1}  # fmt: skip
LABELME_SKIPPED = ("point",)  # no area to draw or to box


class LabelMeShape(NamedTuple):
    """One checked LabelMe shape: type, class id, points, label, ``group_id`` (None: an instance of its own) and, for
    a ``mask`` shape, its bitmap placed in the image."""

    kind: str
    cid: int
    pts: np.ndarray
    label: str
    group_id: Any = None
    region: np.ndarray | None = None
    number: int = 0  # in the file's shapes, for messages (not `index`: a NamedTuple has tuple.index)


_SAID: set[str] = set()


def say_once(message: str) -> None:
    """Print a ``[vitdense]`` line once per process: a reader is built per split, for the split and by the report."""
    if message not in _SAID:
        _SAID.add(message)
        rank_zero_info(message)


class LabelMeReader:
    """LabelMe JSON, one per image (in ``root/annotations`` or beside the images), paired with images by stem."""

    def __init__(
        self, image_dir: Path, ann_dir: Path, labels: Labels, line_width: int = 10, semantic: bool = True
    ) -> None:
        """List, pair and check every JSON file, and print what was skipped and where unlabelled area goes.

        Args:
            image_dir: Folder of the images.
            ann_dir: Folder of the LabelMe JSON files (may be ``image_dir``).
            labels: Label name -> class id.
            line_width: Pixel width of line and linestrip shapes.
            semantic: Whether class masks are drawn, so that the area no shape covers needs a class (or void).
        """
        self.labels, self.line_width, self.ann_dir = labels, line_width, ann_dir
        images = {p.stem: p for p in list_files(image_dir, IMAGE_EXTENSIONS)}
        jsons = {p.stem: p for p in list_files(ann_dir, (".json",))}
        if not jsons:
            raise ValueError(f"No LabelMe JSON files in '{ann_dir}'; export one .json per image from LabelMe.")
        self.samples = pair_by_key(images, jsons, image_dir, ann_dir)
        self.skipped: dict[str, int] = {}
        self.shapes: dict[Path, tuple[int, int, list[LabelMeShape]]] = {}
        for _, path in self.samples:
            self.shapes[path] = self._parse(path)
        self.notes = ([self._fill_note()] if semantic else []) + self.skipped_notes()
        if semantic:  # detection says its own (objects.read_objects skips more)
            say_once(f"[vitdense] LabelMe '{ann_dir}': {'; '.join(self.notes)}")

    def _fill_note(self) -> str:
        """Where the area no shape covers goes, said; an error where no class and no setting decides it."""
        labels = self.labels
        if labels.background is None:
            return f"the area no shape covers -> void ({labels.ignore_index}, data.polygons.background: null)"
        if labels.background not in labels.ids:
            raise ValueError(
                f"LabelMe files in '{self.ann_dir}' leave the area no shape covers unlabelled, and the classes "
                f"({examples(labels.names, 12)}) have no {LABELME_BACKGROUND!r} (labelme2voc's class 0 for that area) "
                f"or {labels.background!r} class. Put labelme's labels.txt (`{LABELME_IGNORE}`, "
                f"`{LABELME_BACKGROUND}`, then your classes) at the data root or name it in data.class_table, or set "
                "data.polygons.background to the class of that area, or to null to make it void (not trained on)."
            )
        fill = labels.ids[labels.background]
        if fill == labels.ignore_index:
            return f"the area no shape covers -> void ({fill}, {labels.background!r} is void)"
        rule = ", labelme2voc's rule" if labels.background == LABELME_BACKGROUND else ""
        return f"the area no shape covers -> class {fill} {labels.background!r}{rule}"

    def skipped_notes(self, also: dict[str, int] | None = None) -> list[str]:
        """What was skipped, counted by shape type (``also``: more counts, e.g. lines for detection)."""
        counts = {**self.skipped, **(also or {})}
        return [f"skipped {n} {kind} shape(s) (no area)" for kind, n in counts.items() if n]

    def _parse(self, path: Path) -> tuple[int, int, list[LabelMeShape]]:
        data = read_json(path)
        if not isinstance(data, dict) or "shapes" not in data:
            raise ValueError(f"'{path}' has no 'shapes' list; is it a LabelMe annotation?")
        if not isinstance(data.get("imageWidth"), int) or not isinstance(data.get("imageHeight"), int):
            raise ValueError(f"'{path}' lacks imageWidth / imageHeight; save it again with LabelMe.")
        width, height = data["imageWidth"], data["imageHeight"]
        shapes = []
        for n, shape in enumerate(data["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            label = str(shape.get("label"))
            where = f"'{path}' shape {n} ({kind} {label!r})"
            if kind not in LABELME_MIN_POINTS:
                raise ValueError(f"{where}: shape type {kind!r} is not one of {', '.join(LABELME_MIN_POINTS)}.")
            cid = self.labels.id(label, where)
            if kind in LABELME_SKIPPED:
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                continue
            pts = _points(shape.get("points"), where, LABELME_MIN_POINTS[kind], width, height)
            if kind in ("rectangle", "circle", "line", "mask") and len(pts) != 2:
                raise ValueError(f"{where} has {len(pts)} points; a {kind} has exactly 2.")
            if kind == "oriented_rectangle" and len(pts) != 4:
                raise ValueError(f"{where} has {len(pts)} points; an oriented_rectangle has exactly 4.")
            region = _labelme_mask(shape.get("mask"), pts, width, height, where) if kind == "mask" else None
            if kind in ("polygon", "oriented_rectangle"):
                _require_area(pts, where)
            elif kind != "mask" and (
                (len(pts) == 2 and np.allclose(pts[0], pts[1])) or (kind == "rectangle" and (pts[0] == pts[1]).any())
            ):
                raise ValueError(f"{where} is degenerate (zero size); delete or redraw it.")
            group_id = shape.get("group_id")
            if group_id is not None and not isinstance(group_id, (int, str)):
                raise ValueError(f"{where}: group_id {group_id!r} is not a number; save the file again with LabelMe.")
            shapes.append(LabelMeShape(kind, cid, pts, label, group_id, region, n))
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
        for shape in shapes:
            mask[draw_labelme(shape, width, height, self.line_width)] = shape.cid
        return mask


def _labelme_mask(encoded: Any, pts: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """The ``(H, W)`` region of a LabelMe ``mask`` shape: its base64 PNG placed at its first point, cropped as
    labelme's ``shapes_to_label`` crops it (integer corners give the extent, else the bitmap's own size)."""
    try:
        patch = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), bool)
    except (TypeError, ValueError, OSError):
        raise ValueError(f"{where}: its 'mask' is not a base64 PNG; save the file again with LabelMe.") from None
    (x1, y1), (x2, y2) = pts.round().astype(int)
    size = (y2 - y1 + 1, x2 - x1 + 1) if np.array_equal(pts, np.trunc(pts)) else patch.shape[:2]
    y0, y_stop, x0, x_stop = max(y1, 0), min(y1 + size[0], height), max(x1, 0), min(x1 + size[1], width)
    if y_stop - y1 > patch.shape[0] or x_stop - x1 > patch.shape[1]:
        raise ValueError(f"{where}: its {patch.shape[1]}x{patch.shape[0]} mask is smaller than its box {pts.tolist()}.")
    region = np.zeros((height, width), bool)
    if y0 < y_stop and x0 < x_stop:
        region[y0:y_stop, x0:x_stop] = patch[y0 - y1 : y_stop - y1, x0 - x1 : x_stop - x1]
    if not region.any():
        raise ValueError(f"{where} covers no pixel; delete or redraw it.")
    return region


def draw_labelme(shape: LabelMeShape, width: int, height: int, line_width: int = 10) -> np.ndarray:
    """The ``(H, W)`` bool region of one checked LabelMe shape, as ``labelme.utils.shape_to_mask`` draws it."""
    if shape.region is not None:
        return shape.region
    canvas = Image.new("L", (width, height), 0)
    draw, xy, kind = ImageDraw.Draw(canvas), [tuple(p) for p in shape.pts.tolist()], shape.kind
    if kind == "circle":
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind == "line":
        draw.line(xy=xy, fill=1, width=line_width)
    elif kind == "linestrip":  # labelme rounds the joints, so wide lines have no notch at turns
        draw.line(xy=xy, fill=1, width=line_width, joint="curve")
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.asarray(canvas, bool)
